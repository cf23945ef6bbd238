"""The Ray backend against a real Ray cluster on this machine (``ray.cluster_utils.Cluster``:
a head and further nodes with their own resources, started by the tests themselves). The
same small experiments as locally run unchanged with ``--backend ray``. With
``SHOAL_REQUIRE_RAY=1`` (CI) a missing Ray fails these tests instead of skipping them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import start_until
from test_run import shoal_cmd

try:
    import ray  # noqa: F401
    from ray.cluster_utils import Cluster
except ImportError:  # pragma: no cover - CI installs ray
    if os.environ.get("SHOAL_REQUIRE_RAY"):
        raise
    pytest.skip("Ray is not installed (pip install ray)", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head with 2 CPUs, and a second node with 1 CPU, one (pretend) GPU and a custom
    resource ``bignode``."""
    # (a test that ran a task in this process may have left CUDA_VISIBLE_DEVICES="", which
    # Ray's GPU node refuses)
    saved = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 150 * 2**20})
    c.gpu_node = c.add_node(num_cpus=1, num_gpus=1, resources={"bignode": 4},
                            object_store_memory=150 * 2**20)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()
        if saved is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


PIPE = """
exp = shoal.Experiment("raytest", grid=shoal.Grid(site=["a", "b"], seed=range(3)))

@exp.step(per=["site"])
def prep(ctx, site):
    (ctx.out / "data.txt").write_text(site * 3)
    return {"n": 3}

@exp.step(per=["site", "seed"], needs=[prep], retries=1)
def train(ctx, site, seed):
    if seed == 2 and ctx.attempt == 1:
        raise RuntimeError("a flaky first attempt")
    data = (ctx.input(prep).out / "data.txt").read_text()
    return {"score": len(data) * 10 + seed, "threads": ctx.threads, "attempt": ctx.attempt}

@exp.gather(over=train)
def combine(ctx, runs):
    return {"total": int(runs.score.sum()), "n": len(runs)}

exp.command("count", "wc -c < {prep}/data.txt", per=["site"], needs=[prep],
            metrics={"bytes": r"^\\s*(\\d+)"})
"""


def _run(path: Path, *args: str, root: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*shoal_cmd(), "run", str(path), "--root", str(root),
                           "--progress", "plain", *args], capture_output=True, text=True,
                          timeout=timeout)


def _on(cluster: Cluster) -> list[str]:
    return ["--backend", "ray", "--address", cluster.address, "--progress", "plain"]


def _metrics(root: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(root)): json.loads(p.read_text())["metrics"]
            for p in sorted(root.rglob(".shoal-result.json"))}


def test_an_experiment_runs_unchanged_on_ray_with_the_local_results(cluster, write_exp,
                                                                    tmp_path: Path) -> None:
    path = write_exp(PIPE)
    local = _run(path, root=tmp_path / "local")
    assert local.returncode == 0, local.stderr
    res = _run(path, "--backend", "ray", "--address", cluster.address, root=tmp_path / "ray")
    assert res.returncode == 0, res.stderr
    assert "11 done" in res.stderr  # (the command steps too, through the same entry)
    assert _metrics(tmp_path / "ray") == _metrics(tmp_path / "local")
    again = _run(path, "--backend", "ray", "--address", cluster.address,
                 root=tmp_path / "ray")
    assert "nothing to run" in again.stderr  # resume: nothing done runs again


def test_gpu_tasks_land_where_the_gpus_are(cluster, write_exp, tmp_path: Path) -> None:
    """gpus=0.5: two tasks share the one (pretend) GPU of the second node; Ray sets
    CUDA_VISIBLE_DEVICES; tasks without gpus= stay off it when the head has room."""
    path = write_exp("""
        import os
        exp = shoal.Experiment("gpu", grid=shoal.Grid(i=range(2)))

        @exp.step(per=["i"], gpus=0.5)
        def on_gpu(ctx, i):
            import ray
            return {"node": ray.get_runtime_context().get_node_id(),
                    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": ctx.device}
    """)
    res = _run(path, "--backend", "ray", "--address", cluster.address, root=tmp_path / "r")
    assert res.returncode == 0, res.stderr
    for i in (0, 1):
        m = _metrics(tmp_path / "r")[f"on_gpu/i={i}"]
        assert m["node"] == cluster.gpu_node.node_id
        assert m["cuda"] == "0" and m["device"] == "cuda:0"


def test_ctrl_c_stops_ray_tasks_and_the_next_run_resumes(cluster, write_exp,
                                                         tmp_path: Path) -> None:
    path = write_exp("""
        import time
        exp = shoal.Experiment("stop", grid=shoal.Grid(i=range(2)))

        @exp.step(per=["i"])
        def long(ctx, i):
            (ctx.out / "started").write_text("1")
            for _ in range(1200):
                if ctx.should_stop():
                    (ctx.out / "saw-stop").write_text("1")
                    return shoal.Requeue
                time.sleep(0.05)
            return {"i": i}

        @exp.step(per=["i"])
        def quick(ctx, i):
            return {"i": i}
    """)
    root = tmp_path / "runs"
    proc = start_until(["run", str(path), "--root", str(root), *_on(cluster)],
                       lambda: len(list((root / "long").glob("*/started"))) == 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(list((root / "long").glob("*/saw-stop"))) == 2
    path.write_text(path.read_text().replace("range(1200)", "range(0)"))
    res = _run(path, "--backend", "ray", "--address", cluster.address, root=root)
    assert res.returncode == 0 and "2 done" in res.stderr, res.stderr  # (quick: not again)


def test_a_missing_cluster_address_is_one_clear_error(write_exp, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([*shoal_cmd(), "run", str(write_exp(PIPE)), "--backend", "ray",
                          "--root", str(tmp_path / "r")], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 2
    assert "name the cluster with --address HOST:PORT or $RAY_ADDRESS" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_node_removed_mid_run_loses_no_result(cluster, write_exp, tmp_path: Path) -> None:
    """Two tasks of 2 cpus: one on the head, one on a node that is then removed. The lost
    attempt goes out again (without using a retry: retries=0) and the run completes with the
    results of a local run."""
    victim = cluster.add_node(num_cpus=2, object_store_memory=150 * 2**20)
    cluster.wait_for_nodes()
    path = write_exp(f"""
        import time, pathlib
        exp = shoal.Experiment("lose", grid=shoal.Grid(i=range(2)))

        @exp.step(per=["i"], cpus=2, retries=0)
        def slow(ctx, i):
            import ray
            node = ray.get_runtime_context().get_node_id()
            pathlib.Path({str(tmp_path)!r}, f"on-{{node}}-{{i}}").write_text("1")
            time.sleep(4)
            return {{"i": i, "square": i * i}}
    """)
    root = tmp_path / "runs"
    proc = start_until(["run", str(path), "--root", str(root), *_on(cluster)],
                       lambda: bool(list(tmp_path.glob(f"on-{victim.node_id}-*"))))
    cluster.remove_node(victim, allow_graceful=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "2 done" in err
    lost = next(tmp_path.glob(f"on-{victim.node_id}-*")).name.rsplit("-", 1)[1]
    log = (root / f"slow/i={lost}/.shoal.log").read_text()
    assert "attempt 1" in log and "attempt 2" not in log  # (a lost attempt is not a retry)
    local = _run(path, root=tmp_path / "local")
    assert local.returncode == 0
    assert _metrics(root) == _metrics(tmp_path / "local")


def test_ddp_tasks_run_on_one_ray_node(cluster, write_exp, tmp_path: Path) -> None:
    """A multi-process task is one Ray task of cpus x procs; its ranks start on that node
    with their own rendezvous port, as locally."""
    pytest.importorskip("torch")
    from test_multiprocess import DDP

    path = write_exp(DDP)
    res = _run(path, "--backend", "ray", "--address", cluster.address, root=tmp_path / "r")
    assert res.returncode == 0, res.stderr
    a = _metrics(tmp_path / "r")["allreduce/task=0"]
    b = _metrics(tmp_path / "r")["allreduce/task=1"]
    assert (a["sum"], b["sum"]) == (3.0, 23.0) and a["world"] == 2


def test_a_killed_controller_leaves_no_task_running_on_the_cluster(cluster, write_exp,
                                                                   tmp_path: Path) -> None:
    """kill -9 of `shoal run --backend ray` (a lost login session): Ray ends the tasks of
    the dead driver; none goes on writing into its task folder."""
    path = write_exp(f"""
        import time, pathlib
        exp = shoal.Experiment("orphan", grid=shoal.Grid(i=range(2)))

        @exp.step(per=["i"])
        def beat(ctx, i):
            for _ in range(600):
                pathlib.Path({str(tmp_path)!r}, f"beat-{{i}}").write_text(str(time.time()))
                time.sleep(0.1)
            return {{}}
    """)
    proc = start_until(["run", str(path), "--root", str(tmp_path / "runs"), *_on(cluster)],
                       lambda: len(list(tmp_path.glob("beat-*"))) == 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(10)  # (Ray notices the dead driver and ends its job's workers)
    before = {p.name: p.read_text() for p in tmp_path.glob("beat-*")}
    time.sleep(3)
    after = {p.name: p.read_text() for p in tmp_path.glob("beat-*")}
    assert before == after, "a task of the killed run is still running"


def test_a_ray_profile_names_the_cluster_and_a_step_s_custom_resources(
        cluster, write_exp, tmp_path: Path) -> None:
    """`--profile NAME` alone: the profile's backend = "ray", its [ray] address, and
    [ray.steps.big] resources = {bignode = 1} put that step's tasks on the node that has it."""
    path = write_exp("""
        exp = shoal.Experiment("prof", grid=shoal.Grid(i=range(3)))

        @exp.step(per=["i"])
        def big(ctx, i):
            import ray
            return {"node": ray.get_runtime_context().get_node_id()}
    """)
    (path.parent / "lab.toml").write_text(
        f'backend = "ray"\n[ray]\naddress = "{cluster.address}"\n'
        "[ray.steps.big]\nresources = { bignode = 1 }\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([*shoal_cmd(), "run", str(path), "--root", str(tmp_path / "r"),
                          "--profile", "lab", "--progress", "plain"], capture_output=True,
                         text=True, env=env, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "Ray profile" in res.stderr
    nodes = {m["node"] for m in _metrics(tmp_path / "r").values()}
    assert nodes == {cluster.gpu_node.node_id}


def test_a_bad_ray_profile_is_one_clear_error_before_anything_runs(write_exp,
                                                                    tmp_path: Path) -> None:
    path = write_exp(PIPE)
    bad = {
        "[ray]\nadress = 'x:1'\n": "unknown key 'ray.adress'",
        "[ray]\nresources = { CPU = 2 }\n": "set it with the step's cpus=",
        "[ray.steps.nosuch]\nresources = { a = 1 }\n": "[ray.steps.nosuch] names no step",
        "backend = 'k8s'\n": "give \"slurm\" or \"ray\"",
    }
    for text, says in bad.items():
        (path.parent / "p.toml").write_text(text)
        res = subprocess.run([*shoal_cmd(), "run", str(path), "--root", str(tmp_path / "r"),
                              "--backend", "ray", "--profile", "p"], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 2 and says in res.stderr, (text, res.stderr)
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()


def test_staged_archives_unpack_once_per_ray_node(cluster, write_exp, tmp_path: Path) -> None:
    """stage=: unpacked into the node's scratch (not the run root), once for all its tasks
    (the two Ray nodes here share this machine's /tmp: one unpack)."""
    data = tmp_path / "raw"
    data.mkdir()
    for k in range(20):
        (data / f"f{k}.txt").write_text(str(k))
    assert subprocess.run([*shoal_cmd(), "pack-data", str(data), "-o",
                           str(tmp_path / "data.tar")], capture_output=True).returncode == 0
    path = write_exp("""
        exp = shoal.Experiment("sg", grid=shoal.Grid(i=range(6)), stage="data.tar")

        @exp.step(per=["i"])
        def read(ctx, i):
            d = ctx.staged("data")
            return {"dir": str(d), "marker": (d / ".shoal-staged").read_text(),
                    "sum": sum(int(p.read_text()) for p in d.glob("f*.txt"))}
    """)
    root = tmp_path / "r"
    res = _run(path, *_on(cluster), root=root)
    assert res.returncode == 0, res.stderr
    docs = list(_metrics(root).values())
    assert len(docs) == 6 and {d["sum"] for d in docs} == {sum(range(20))}
    assert len({d["dir"] for d in docs}) == 1 and len({d["marker"] for d in docs}) == 1
    assert not Path(docs[0]["dir"]).is_relative_to(root)  # node-local scratch
    import shutil
    shutil.rmtree(docs[0]["dir"])


def test_nodes_that_join_mid_run_take_tasks(cluster, write_exp, tmp_path: Path) -> None:
    """The controller looks at the cluster again as it runs (an autoscaler adds nodes): a
    node of 3 CPUs added mid-run gets tasks; more run at once than the cluster first had."""
    path = write_exp(f"""
        import time, pathlib
        exp = shoal.Experiment("grow", grid=shoal.Grid(i=range(24)))

        @exp.step(per=["i"])
        def work(ctx, i):
            t0 = time.time()
            time.sleep(2.5)
            pathlib.Path({str(tmp_path)!r}, f"span-{{i}}").write_text(f"{{t0}} {{time.time()}}")
            return {{"i": i}}
    """)
    root = tmp_path / "runs"
    proc = start_until(["run", str(path), "--root", str(root), *_on(cluster)],
                       lambda: bool(list(tmp_path.glob("span-*"))))
    extra = cluster.add_node(num_cpus=3, object_store_memory=150 * 2**20)
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        cluster.remove_node(extra)
    assert proc.returncode == 0, err
    spans = [tuple(map(float, p.read_text().split())) for p in tmp_path.glob("span-*")]
    at_once = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert len(spans) == 24 and at_once > 3, at_once
