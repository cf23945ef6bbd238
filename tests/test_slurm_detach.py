"""--detach, status and re-attach; profiles; staging — on the real local Slurm (skipped
without one, failing instead under SHOAL_REQUIRE_SLURM=1), plus profile unit tests."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from shoal.backends.slurm import SlurmOptions, profile
from test_run import shoal_cmd
from test_slurm import _need_slurm, slurm_run

PIPELINE = """
    import pathlib, time
    exp = shoal.Experiment("dt", grid=shoal.Grid(site=["a", "b"], seed=range(4)))
    @exp.step(per=["site"])
    def prep(ctx, site):
        time.sleep(1)
        return {{"n": len(site) * 10}}
    @exp.step(per=["site", "seed"], needs=[prep])
    def train(ctx, site, seed):
        marker = pathlib.Path({tmp!r}) / "fixed"
        if site == "b" and seed == 3 and not marker.exists():
            raise RuntimeError("broken until fixed")
        return {{"loss": seed + ctx.input(prep).result["n"]}}
    @exp.gather(per=[], over=train)
    def combine(ctx, runs):
        return {{"n": len(runs), "total": float(runs.loss.sum())}}
    echo = exp.command("echo", "echo {{site}} {{seed}} > {{out}}/x.txt",
                       per=["site", "seed"], needs=[train])
"""


def shoal(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*shoal_cmd(), *args], capture_output=True, text=True,
                          timeout=timeout)


def wait_detached(path: Path, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while True:
        res = shoal("status", str(path), "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        if doc.get("slurm", {}).get("elements", 1) == 0:
            return doc
        assert time.time() < deadline, doc
        time.sleep(2)


def arrays(tmp_path: Path) -> list[str]:
    return (tmp_path / "runs/.shoal/slurm/jobs").read_text().splitlines()


def test_detach_then_status_then_run_resubmits_only_what_failed(write_exp,
                                                                 tmp_path: Path) -> None:
    _need_slurm()
    path = write_exp(PIPELINE.format(tmp=str(tmp_path)))
    t0 = time.time()
    res = shoal("run", str(path), "--backend", "slurm", "--detach")
    assert res.returncode == 0, res.stderr
    assert time.time() - t0 < 30 and "submitted 19 tasks" in res.stderr
    assert len(arrays(tmp_path)) == 4  # one array per step, submitted at once
    doc = wait_detached(path)
    steps = doc["steps"]
    assert steps["prep"]["done"] == 2 and steps["train"]["done"] == 7
    assert steps["train"]["failed"] == 1
    assert steps["combine"]["done"] == 0 and steps["echo"]["done"] == 7
    status = shoal("status", str(path))
    assert "broken until fixed" in status.stdout
    skipped = json.loads((tmp_path / "runs/combine/.shoal-error.json").read_text())
    assert skipped["status"] == "skipped" and "train[site=b,seed=3]" in skipped["error"]
    before = {p: json.loads(p.read_text())["run_id"]
              for p in (tmp_path / "runs/train").glob("*/*/.shoal-result.json")}
    (tmp_path / "fixed").write_text("")
    res = slurm_run(path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 done" in res.stderr  # train[b,3], its echo, combine: nothing else re-ran
    after = {p: json.loads(p.read_text())["run_id"] for p in before}
    assert after == before
    total = json.loads((tmp_path / "runs/combine/.shoal-result.json").read_text())
    assert total["metrics"]["n"] == 8
    assert "nothing to run" in slurm_run(path).stderr


def test_run_attaches_to_a_detached_submission_without_submitting_again(
        write_exp, tmp_path: Path) -> None:
    _need_slurm()
    (tmp_path / "fixed").write_text("")
    path = write_exp(PIPELINE.format(tmp=str(tmp_path)))
    assert shoal("run", str(path), "--backend", "slurm", "--detach").returncode == 0
    from shoal.api.dashboard import Dashboard
    from shoal.spec.loader import load_experiment

    seen = Dashboard(load_experiment(str(path))).state()  # (shoal serve's, read-only)
    assert seen["controller"] == "none" and seen["detached"]["elements"] > 0
    assert set(seen["detached"]["steps"]) <= {"prep", "train", "combine", "echo"}
    again = shoal("run", str(path), "--backend", "slurm", "--detach")
    assert again.returncode == 2 and "still queued or running" in again.stderr
    local = shoal("run", str(path), "--progress", "none")  # would race it for the folders
    assert local.returncode == 2 and "before a local run" in local.stderr
    res = slurm_run(path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(arrays(tmp_path)) == 4  # followed the detached arrays, submitted none
    assert "19 done" in res.stderr
    status = json.loads(shoal("status", str(path), "--json").stdout)
    assert status["done"] == status["total"] == 19


def test_profile_per_step_settings_reach_sbatch(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    path = write_exp("""
        exp = shoal.Experiment("pf", grid=shoal.Grid(i=range(4)))
        @exp.step(per=["i"])
        def a(ctx, i):
            return {"i": i}
        @exp.step(per=["i"], needs=[a])
        def b(ctx, i):
            return {"i": i}
    """)
    (tmp_path / "cluster.toml").write_text(
        'tasks_per_job = 2\nsbatch = ["--comment=shoal-defaults"]\n'
        '[steps.b]\npartition = "urgent"\ntasks_per_job = 4\nsbatch = ["--nice=5"]\n')
    res = slurm_run(path, "--profile", "cluster")
    assert res.returncode == 0, res.stderr[-2000:]
    scripts = {p.read_text() for p in (tmp_path / "runs/.shoal/slurm").glob("*/array-0.sh")}
    a_text = next(t for t in scripts if "-a\n" in t)
    b_text = next(t for t in scripts if "-b\n" in t)
    assert "--array=0-1\n" in a_text and "--partition" not in a_text
    assert "--comment=shoal-defaults" in a_text and "--nice" not in a_text
    assert "--array=0-0\n" in b_text and "--partition=urgent" in b_text
    assert "--comment=shoal-defaults" in b_text and "--nice=5" in b_text


def test_staged_archive_is_unpacked_once_per_job(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    data = tmp_path / "raw"
    data.mkdir()
    for k in range(50):
        (data / f"f{k}.txt").write_text(str(k))
    assert shoal("pack-data", str(data), "-o", str(tmp_path / "data.tar")).returncode == 0
    path = write_exp("""
        import os
        exp = shoal.Experiment("sg", grid=shoal.Grid(i=range(8)), stage="data.tar")
        @exp.step(per=["i"])
        def read(ctx, i):
            d = ctx.staged("data")
            return {"dir": str(d), "marker": (d / ".shoal-staged").read_text(),
                    "sum": sum(int(p.read_text()) for p in d.glob("f*.txt")),
                    "job": os.environ["SLURM_ARRAY_JOB_ID"]}
    """)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    res = slurm_run(path, "--tasks-per-job", "4",
                    f"--sbatch=--export=ALL,SLURM_TMPDIR={scratch}")
    assert res.returncode == 0, res.stderr[-2000:]
    docs = [json.loads(p.read_text())["metrics"]
            for p in (tmp_path / "runs/read").glob("*/.shoal-result.json")]
    assert len(docs) == 8 and {d["sum"] for d in docs} == {sum(range(50))}
    assert {d["dir"] for d in docs} == {d["dir"] for d in docs[:1]}
    assert Path(docs[0]["dir"]).parent.parent == scratch  # node-local scratch
    assert len({d["marker"] for d in docs}) == 1  # one unpack served both elements


# ---------------------------------------------------------------- profiles (no Slurm)
def test_profile_lookup_order_and_merging(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "config"
    (home / "shoal/profiles").mkdir(parents=True)
    (home / "shoal/profiles/hpc.toml").write_text('partition = "user"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    exp_dir = tmp_path / "exp"
    (exp_dir / "profiles").mkdir(parents=True)
    assert profile.find("hpc", exp_dir) == home / "shoal/profiles/hpc.toml"
    (exp_dir / "profiles/hpc.toml").write_text('partition = "sub"\n')
    assert profile.find("hpc", exp_dir) == exp_dir / "profiles/hpc.toml"
    (exp_dir / "hpc.toml").write_text(
        'partition = "gpu"\nthrottle = 10\nsbatch = ["--constraint=v100"]\n'
        'mem_retry_factor = 2\n[steps.prep]\npartition = "cpu"\nsbatch = ["--nice"]\n')
    path = profile.find("hpc", exp_dir)
    assert path == exp_dir / "hpc.toml"
    opts = SlurmOptions.from_profile(path, throttle=5, account=None, extra=["--requeue"])
    assert opts.partition == "gpu" and opts.throttle == 5 and opts.mem_retry_factor == 2
    prep, train = opts.for_step("prep"), opts.for_step("train")
    assert prep.partition == "cpu" and train.partition == "gpu" and prep.throttle == 5
    assert prep.extra == ["--constraint=v100", "--requeue", "--nice"]
    assert train.extra == ["--constraint=v100", "--requeue"]


@pytest.mark.parametrize("text, message", [
    ('partiton = "gpu"\n', "unknown key 'partiton'"),
    ('sbatch = "--x"\n', "must be a list of strings"),
    ('[steps.prep]\nmem_retry_factor = 2\n', "unknown key 'steps.prep.mem_retry_factor'"),
    ('throttle = "ten"\n', "'throttle' must be a whole number"),
    ('partition = \n', "profile"),
])
def test_bad_profiles_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(Exception) as info:
        profile.load(path)
    assert message in str(info.value)


def test_profile_naming_an_unknown_step_fails_before_submitting(write_exp, cli,
                                                                tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("pf", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"])
        def a(ctx, i):
            return {}
    """)
    (tmp_path / "c.toml").write_text('[steps.train]\npartition = "gpu"\n')
    rc, _, err = cli("run", path, "--profile", "c")
    assert rc == 2 and "[steps.train] names no step" in err and "Traceback" not in err
    rc, _, err = cli("run", path, "--profile", "missing")
    assert rc == 2 and "no profile found" in err
    rc, _, err = cli("run", path, "--detach")
    assert rc == 2 and "--detach needs --backend slurm" in err
    assert not (tmp_path / "runs/a").exists()


def test_dependency_line_in_the_batch_script() -> None:
    from shoal.backends.slurm import script

    text = script.render(job_name="j", size=2, output="o/%A_%a.out",
                         python="python3", submission="/s", offset=0, cpus=1,
                         dependency="afterany:11:12")
    assert "#SBATCH --dependency=afterany:11:12\n" in text


PACKED = """
    import json, os
    exp = shoal.Experiment("pk", grid=shoal.Grid(site=["a", "b"], seed=range(3)))
    @exp.step(per=["site"])
    def prep(ctx, site):
        return {{"base": 100 if site == "a" else 200}}
    @exp.step(per=["site", "seed"], needs=[prep], pack=["seed"])
    def train(pack, site, seed):
        with open({ledger!r}, "a") as fh:
            fh.write(json.dumps({{"site": site, "seed": seed,
                                 "job": os.environ.get("SLURM_ARRAY_JOB_ID")}}) + "\\n")
        return [{{"v": m.input(prep).result["base"] + m.params["seed"]}} for m in pack.members]
    @exp.step(per=["site", "seed"], needs=[train])
    def evaluate(ctx, site, seed):
        return {{"v2": 2 * ctx.input(train).result["v"]}}
"""


@pytest.mark.parametrize("detached", [False, True])
def test_packs_on_slurm(write_exp, tmp_path: Path, detached: bool) -> None:
    _need_slurm()
    ledger = tmp_path / "ledger.jsonl"
    path = write_exp(PACKED.format(ledger=str(ledger)))
    if detached:
        res = shoal("run", str(path), "--backend", "slurm", "--detach")
        assert res.returncode == 0, res.stderr
        doc = wait_detached(path)
        assert doc["done"] == doc["total"] == 14, doc
    else:
        res = slurm_run(path)
        assert res.returncode == 0, res.stderr[-2000:]
    calls = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert sorted((c["site"], c["seed"]) for c in calls) == [("a", [0, 1, 2]), ("b", [0, 1, 2])]
    assert all(c["job"] for c in calls)
    for site, base in (("a", 100), ("b", 200)):
        for seed in range(3):
            doc = json.loads((tmp_path / f"runs/train/site={site}/seed={seed}/"
                              ".shoal-result.json").read_text())
            assert doc["metrics"] == {"v": base + seed}
            ev = json.loads((tmp_path / f"runs/evaluate/site={site}/seed={seed}/"
                             ".shoal-result.json").read_text())
            assert ev["metrics"] == {"v2": 2 * (base + seed)}


def test_detach_refuses_a_step_that_needs_chained_segments(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    path = write_exp("""
        exp = shoal.Experiment("ch", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"])
        def a(ctx, i):
            return {}
        @exp.step(per=["i"], needs=[a], time="3h")
        def long(ctx, i):
            return {}
    """)
    res = shoal("run", str(path), "--backend", "slurm", "--detach", "--max-time", "1h")
    assert res.returncode == 2 and "step 'long'" in res.stderr and "chained" in res.stderr
    assert not (tmp_path / "runs/.shoal/slurm/jobs").exists()  # nothing was submitted
