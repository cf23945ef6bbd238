"""Multi-process tasks (procs=N, seed 002): real torch.distributed over Gloo on CPU, each
task with its own rendezvous port, side by side; a failing rank ends the task; a hang is
killed by hang_timeout; command steps start N copies (srun) or one self-launching copy
(torchrun); locally and on the local Slurm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import start_until
from test_run import run, shoal_cmd
from test_slurm import _need_slurm, slurm_run

pytest.importorskip("torch")

DDP = """
import os, time
exp = shoal.Experiment("ddp", grid=shoal.Grid(task=range(2)))

@exp.step(per=["task"], procs=2, cpus=1, hang_timeout="5m")
def allreduce(ctx, task):
    import torch, torch.distributed as dist
    dist.init_process_group("gloo")
    t = torch.tensor([float(ctx.rank + 1 + 10 * task)])
    dist.all_reduce(t)
    started = time.time()
    time.sleep(1.5)  # (both tasks at once: their ranks overlap)
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {ctx.rank} of {ctx.world_size}: sum {t.item()}", flush=True)
    return {"sum": t.item(), "port": int(os.environ["MASTER_PORT"]), "world": ctx.world_size,
            "rank": int(os.environ["RANK"]), "threads": ctx.threads, "t": started}
"""


def _result(tmp_path: Path, rel: str) -> dict:
    return json.loads((tmp_path / "runs" / rel / ".shoal-result.json").read_text())


def _error(tmp_path: Path, rel: str) -> dict:
    return json.loads((tmp_path / "runs" / rel / ".shoal-error.json").read_text())


def _check_two_ddp_tasks(tmp_path: Path) -> None:
    a = _result(tmp_path, "allreduce/task=0")["metrics"]
    b = _result(tmp_path, "allreduce/task=1")["metrics"]
    assert (a["sum"], b["sum"]) == (3.0, 23.0)  # 1+2 and 11+12: each task's own ranks
    assert a["world"] == b["world"] == 2 and a["rank"] == b["rank"] == 0
    assert a["port"] != b["port"]
    log1 = (tmp_path / "runs/allreduce/task=0/.shoal-ranks/1.log").read_text()
    assert "rank 1 of 2: sum 3.0" in log1


def test_two_ddp_tasks_run_side_by_side_on_their_own_ports(write_exp, tmp_path: Path) -> None:
    path = write_exp(DDP)
    res = run(path, "-j", "4")
    assert res.returncode == 0, res.stderr
    _check_two_ddp_tasks(tmp_path)
    a = _result(tmp_path, "allreduce/task=0")
    b = _result(tmp_path, "allreduce/task=1")
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # side by side
    assert "rank 0 of 2: sum 3.0" in (tmp_path / "runs/allreduce/task=0/.shoal.log").read_text()


def test_a_rank_that_raises_fails_the_task_and_leaves_no_process(write_exp,
                                                                 tmp_path: Path) -> None:
    path = write_exp(f"""
        import os, pathlib
        exp = shoal.Experiment("ddp", grid=shoal.Grid(task=range(1)))

        @exp.step(per=["task"], procs=2)
        def bad(ctx, task):
            import torch, torch.distributed as dist
            pathlib.Path({str(tmp_path)!r}, f"pid-{{ctx.rank}}").write_text(str(os.getpid()))
            dist.init_process_group("gloo")
            if ctx.rank == 1:
                raise ValueError("rank one is broken")
            dist.all_reduce(torch.ones(1))  # rank 0 waits here for rank 1, forever
            return {{"never": 1}}
    """)
    t0 = time.time()
    res = run(path, "-j", "2")
    assert res.returncode == 1
    assert time.time() - t0 < 120
    err = _error(tmp_path, "bad/task=0")
    assert err["status"] == "failed"
    assert "rank 1" in err["error"] and "ValueError: rank one is broken" in err["error"]
    assert "ValueError" in err["log_tail"]  # that rank's log, not rank 0's
    for k in (0, 1):
        pid = int((tmp_path / f"pid-{k}").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_rank_stuck_in_a_collective_is_killed_by_hang_timeout(write_exp,
                                                                tmp_path: Path) -> None:
    path = write_exp("""
        import time
        exp = shoal.Experiment("ddp", grid=shoal.Grid(task=range(1)))

        @exp.step(per=["task"], procs=2, hang_timeout="4s")
        def stuck(ctx, task):
            import torch, torch.distributed as dist
            dist.init_process_group("gloo")
            if ctx.rank == 1:
                time.sleep(600)  # silent: no output, no checkpoint
            dist.all_reduce(torch.ones(1))
            return {"never": 1}
    """)
    t0 = time.time()
    res = run(path, "-j", "2")
    took = time.time() - t0
    assert res.returncode == 1 and took < 90, (took, res.stderr)
    err = _error(tmp_path, "stuck/task=0")
    assert err["error"].startswith("hung: no output on any rank's log") and "4 s" in err["error"]


def test_a_command_step_starts_its_ranks_or_one_self_launching_copy(write_exp,
                                                                    tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("ddp", grid=shoal.Grid(task=range(1)))
        exp.command("copies", "{python} -c 'import os; print(\\"rank\\", os.environ[\\"RANK\\"], "
                    "\\"of\\", os.environ[\\"WORLD_SIZE\\"], os.environ[\\"MASTER_PORT\\"])'",
                    per=["task"], procs=3)
        exp.command("launcher", "echo torchrun --nproc-per-node {procs} --master-port {port} "
                    "--master-addr {master_addr}", per=["task"], procs=2)
    """)
    res = run(path, "-j", "3")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "runs/copies/task=0"
    logs = [(folder / ".shoal.log").read_text(),
            *((folder / f".shoal-ranks/{k}.log").read_text() for k in (1, 2))]
    ports = set()
    for k, text in enumerate(logs):
        line = next(ln for ln in text.splitlines() if ln.startswith("rank "))
        _, rank, _, world, port = line.split()
        assert (int(rank), int(world)) == (k, 3)
        ports.add(port)
    assert len(ports) == 1
    once = (tmp_path / "runs/launcher/task=0/.shoal.log").read_text()
    line = next(ln for ln in once.splitlines() if ln.startswith("torchrun"))
    assert line.startswith("torchrun --nproc-per-node 2 --master-port ")
    assert line.split()[4].isdigit() and line.endswith("--master-addr 127.0.0.1")
    assert not (tmp_path / "runs/launcher/task=0/.shoal-ranks/1.log").exists()


def test_a_stop_reaches_every_rank_and_the_task_is_interrupted(write_exp,
                                                                tmp_path: Path) -> None:
    path = write_exp("""
        import time
        exp = shoal.Experiment("ddp", grid=shoal.Grid(task=range(1)))

        @exp.step(per=["task"], procs=2)
        def long(ctx, task):
            (ctx.out / f"started-{ctx.rank}").write_text("1")
            for _ in range(1200):
                if ctx.should_stop():
                    (ctx.out / f"saw-stop-{ctx.rank}").write_text("1")
                    return shoal.Requeue
                time.sleep(0.05)
            return {}
    """)
    folder = tmp_path / "runs/long/task=0"
    proc = start_until(["run", str(path), "-j", "2", "--progress", "plain"],
                       lambda: len(list(folder.glob("started-*"))) == 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in folder.glob("saw-stop-*")) == ["saw-stop-0", "saw-stop-1"]
    assert _error(tmp_path, "long/task=0")["status"] == "interrupted"


def test_every_rank_keeps_its_own_checkpoint_across_attempts(write_exp,
                                                              tmp_path: Path) -> None:
    path = write_exp("""
        import time
        exp = shoal.Experiment("ck", grid=shoal.Grid(task=range(1)))

        @exp.step(per=["task"], procs=2, retries=1)
        def resume(ctx, task):
            got = ctx.checkpoint.load(reader=lambda p: p.read_text())
            if got is None:
                text = f"saved by rank {ctx.rank}"
                ctx.checkpoint.save(writer=lambda p: p.write_text(text))
                (ctx.out / f"saved-{ctx.rank}").write_text("1")
                for _ in range(200):  # (both saved before one fails and ends the other)
                    if len(list(ctx.out.glob("saved-*"))) == 2:
                        break
                    time.sleep(0.05)
                raise RuntimeError("first attempt fails after its checkpoints")
            (ctx.out / f"loaded-{ctx.rank}").write_text(got)
            return {"loaded": got}
    """)
    res = run(path, "-j", "2")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "runs/resume/task=0"
    assert _result(tmp_path, "resume/task=0")["metrics"] == {"loaded": "saved by rank 0"}
    assert (folder / "loaded-1").read_text() == "saved by rank 1"
    assert not (folder / ".shoal-checkpoints").exists()  # done: they go


def test_a_rank_that_would_crash_in_its_teardown_still_finishes_the_task(
        write_exp, tmp_path: Path) -> None:
    """Bug (CI): a Gloo rank that finished and reported its result then died in the
    interpreter's teardown ("terminate called without an active exception", SIGABRT), and
    the task failed. A rank now leaves without the teardown once its report is written."""
    path = write_exp("""
        import atexit, os
        exp = shoal.Experiment("td", grid=shoal.Grid(task=range(1)))

        @exp.step(per=["task"], procs=2)
        def teardown(ctx, task):
            atexit.register(os.abort)  # (what a library's static destructor may do)
            return {"rank": ctx.rank}
    """)
    res = run(path, "-j", "2")
    assert res.returncode == 0, res.stderr
    assert _result(tmp_path, "teardown/task=0")["metrics"] == {"rank": 0}


@pytest.mark.parametrize("body, message", [
    ("@exp.step(per=['t'], procs=2, pack=['t'])\ndef f(ctx, t): ...",
     "pack= and procs=2 do not go together"),
    ("exp.command('c', 'run --port {port}', per=['t'])", "give procs="),
    ("@exp.step(per=['t'], procs=0)\ndef f(ctx, t): ...", "procs=0 must be a whole number"),
    ("@exp.step(per=['t'], hang_timeout='1m')\ndef f(ctx, t): ...",
     "hang_timeout= watches the ranks"),
    ("@exp.step(per=['t'], procs=3, nodes=2)\ndef f(ctx, t): ...",
     "give procs= a multiple of 2"),
])
def test_bad_multi_process_options_are_one_clear_error(write_exp, cli, body: str,
                                                       message: str) -> None:
    path = write_exp("exp = shoal.Experiment('e', grid=shoal.Grid(t=[1, 2]))\n" + body)
    rc, _, err = cli("plan", path)
    assert rc == 2 and message in err and "Traceback" not in err


def test_ddp_tasks_and_a_failing_rank_on_slurm(write_exp, tmp_path: Path) -> None:
    """The same DDP tasks as Slurm array elements: a Slurm task per rank (--ntasks=2,
    --cpus-per-task=1), started by srun from the element, the rendezvous on the job's first
    node; a command's rank that fails fails its task, named, with that rank's log."""
    _need_slurm()
    path = write_exp(DDP + """
exp.command("ranks", "sh -c 'echo rank $RANK of $WORLD_SIZE; test $RANK = 0'",
            per=["task"], procs=2)
""")
    res = slurm_run(path, timeout=300)
    assert res.returncode == 1, res.stderr
    _check_two_ddp_tasks(tmp_path)
    assert "(srun)" in (tmp_path / "runs/allreduce/task=0/.shoal.log").read_text()
    scripts = [p.read_text() for p in (tmp_path / "runs/.shoal/slurm").glob("*/array-0.sh")]
    assert any("--ntasks=2" in s and "--cpus-per-task=1" in s for s in scripts)
    err = _error(tmp_path, "ranks/task=0")
    assert err["error"] == "rank 1: command exited with status 1", err
    assert "rank 1 of 2" in err["log_tail"]


THREADS = """
import os
exp = shoal.Experiment("threads", grid=shoal.Grid(n_threads=[1, 2, 3], ranks=[1, 2]))

@exp.step(per=["n_threads"], cpus="{n_threads}")
def fit(ctx, n_threads):
    import torch
    return {"threads": ctx.threads, "omp": int(os.environ["OMP_NUM_THREADS"]),
            "torch": torch.get_num_threads()}

@exp.step(per=["n_threads", "ranks"], cpus="{n_threads}", procs="{ranks}", mem="{ranks}")
def ddp(ctx, n_threads, ranks):
    return {"world": ctx.world_size, "omp": int(os.environ["OMP_NUM_THREADS"])}

exp.command("cmd", "echo threads={threads}", per=["n_threads"], cpus="{n_threads}")
"""


def test_resources_from_a_dimension_give_each_task_its_own(write_exp, tmp_path: Path,
                                                          cli) -> None:
    """Seed 002's thread table as one step over an n_threads dimension: cpus="{n_threads}"
    sets each task's threads (and its slot); procs= and mem= may come from dimensions too."""
    path = write_exp(THREADS)
    res = run(path, "-j", "6")
    assert res.returncode == 0, res.stderr
    for n in (1, 2, 3):
        m = _result(tmp_path, f"fit/n_threads={n}")["metrics"]
        # (torch starts with no more threads than the machine has cores)
        assert m == {"threads": n, "omp": n, "torch": min(n, os.cpu_count() or n)}
        log = (tmp_path / f"runs/cmd/n_threads={n}/.shoal.log").read_text()
        assert f"threads={n}" in log
        for r in (1, 2):
            m = _result(tmp_path, f"ddp/n_threads={n}/ranks={r}")["metrics"]
            assert m == {"world": r, "omp": n}
    rc, _, err = cli("plan", write_exp(THREADS.replace("[1, 2, 3]", "[1, 0]"), "bad.py"))
    assert rc == 2 and "step 'fit': cpus=0 must be a whole number" in err
    assert "dimension 'n_threads'" in err
    rc, _, err = cli("plan", write_exp(THREADS.replace('per=["n_threads"], cpus=',
                                                       'per=["ranks"], cpus=', 1), "b2.py"))
    assert rc == 2 and "names 'n_threads', which is not a dimension of the step" in err


def test_tune_prints_a_table_and_a_recommendation_and_keeps_no_results(write_exp, cli,
                                                                        tmp_path: Path) -> None:
    """`shoal tune` runs a sample of a step's tasks at threads x tasks-at-once settings
    that fill the machine; it prints its table (figures are not asserted) and what to use,
    and leaves neither results nor its scratch folder behind."""
    path = write_exp("""
        exp = shoal.Experiment("tune", grid=shoal.Grid(i=range(6)))

        @exp.step(per=[])
        def data(ctx):
            return {"n": 6}

        @exp.step(per=["i"], needs=[data])
        def fit(ctx, i):
            import numpy as np
            a = np.random.default_rng(i).random((150, 150))
            for _ in range(20):
                a = np.tanh(a @ a / 150)
            return {"threads": ctx.threads, "v": float(a.sum())}
    """)
    assert run(path, "--only", "i=0").returncode == 0  # (data, and one fit)
    rc, out, err = cli("tune", path, "fit", "--sample", "2", "--repeats", "2",
                       "--threads", "1,2", "-j", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["threads", "at", "once", "tasks/h", "spread", "s/task",
                                "peak", "MB/task"]
    rows = [ln.split() for ln in lines[1:3]]
    assert sorted((r[0], r[1]) for r in rows) == [("1", "2"), ("2", "1")]
    assert lines[3].startswith("recommend: cpus=") and "on step 'fit' and -j 2" in lines[3]
    assert not list((tmp_path / "runs/.shoal/tune").glob("*"))
    rc, out, _ = cli("status", path, "--json")
    assert json.loads(out)["steps"]["fit"]["done"] == 1  # (only the run's own task)
    rc, _, err = cli("tune", path, "nope")
    assert rc == 2 and "no step 'nope'" in err


def test_a_task_over_two_nodes_asks_slurm_for_its_ranks_per_node() -> None:
    """(Golden text: the local Slurm has one node.) nodes=2, procs=4: four Slurm tasks, two
    per node; --gres and --mem count per node."""
    from shoal.backends.slurm import script

    text = script.render(job_name="j", size=1, output="o/%A_%a.out", python="py",
                         submission="/s", offset=0, cpus=8, ntasks=4, nodes=2, gpus=4,
                         mem_mb=64000)
    for line in ("--cpus-per-task=8", "--ntasks=4", "--nodes=2", "--ntasks-per-node=2",
                 "--gres=gpu:2", "--mem=64000M"):
        assert f"#SBATCH {line}\n" in text, line


TUNE_BODY = """
exp = shoal.Experiment("tune", grid=shoal.Grid(i=range(4)))

@exp.step(per=[])
def data(ctx):
    return {"n": 4}

@exp.step(per=["i"], needs=[data])
def fit(ctx, i):
    import os
    return {"threads": ctx.threads, "omp": int(os.environ["OMP_NUM_THREADS"])}
"""


def test_tune_writes_its_choice_into_a_profile_that_slurm_runs_use(write_exp, cli,
                                                                  tmp_path: Path) -> None:
    """--write-profile puts the recommended cpus into [steps.STEP] of a Slurm profile
    (made, or updated in place, the rest of the file kept); a run with that profile gives
    the step those cpus (--cpus-per-task and its threads)."""
    path = write_exp(TUNE_BODY)
    prof = tmp_path / "fast.toml"
    prof.write_text('partition = "debug"\n\n[steps.fit]\ncpus = 7  # old\nthrottle = 2\n')
    assert run(path, "--only", "i=0").returncode == 0
    rc, out, err = cli("tune", path, "fit", "--sample", "2", "--repeats", "1",
                       "--threads", "2", "-j", "2", "--write-profile", "fast")
    assert rc == 0, err
    text = prof.read_text()
    assert text.startswith('partition = "debug"\n') and "throttle = 2" in text
    assert text.count("cpus =") == 1 and "cpus = 2  # shoal tune: " in text
    assert f"into [steps.fit] of {prof}" in out
    rc, _, err = cli("tune", path, "fit", "--sample", "2", "--repeats", "1",
                     "--threads", "1", "-j", "1", "--write-profile", str(tmp_path / "new.toml"))
    assert rc == 0 and (tmp_path / "new.toml").read_text().startswith("[steps.fit]\ncpus = 1")
    _need_slurm()
    res = slurm_run(path, "--profile", "fast", "--partition", "debug")
    assert res.returncode == 0, res.stderr
    assert _result(tmp_path, "fit/i=3")["metrics"] == {"threads": 2, "omp": 2}
    scripts = [p.read_text() for p in (tmp_path / "runs/.shoal/slurm").glob("*/array-0.sh")]
    assert any("#SBATCH --job-name=shoal-tune-fit" in s and "--cpus-per-task=2" in s
               for s in scripts)


def test_tune_on_one_slurm_node(write_exp, tmp_path: Path) -> None:
    """--backend slurm: the same measurement inside one whole node (srun --exclusive)."""
    _need_slurm()
    path = write_exp(TUNE_BODY)
    assert run(path, "--only", "i=0").returncode == 0
    res = subprocess.run([*shoal_cmd(), "tune", str(path), "fit", "--backend", "slurm",
                          "--sample", "2", "--repeats", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "srun --nodes=1 --ntasks=1 --exclusive" in res.stderr
    assert res.stdout.splitlines()[0].split()[:2] == ["threads", "at"]
    assert "recommend: cpus=1 on step 'fit'" in res.stdout
