"""End-to-end runs of `shoal run` in temp dirs (real worker processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.state.lock import RootLock

PIPE = """
import os
exp = shoal.Experiment("pipe", grid=shoal.Grid(site=["a", "b"], seed=range(3)))

@exp.step(per=["site"])
def prep(ctx, site):
    (ctx.out / "data.txt").write_text(site * 4)
    return {"n": 4}

@exp.step(per=["site", "seed"], needs=[prep])
def train(ctx, site, seed):
    data = (ctx.input(prep).out / "data.txt").read_text()
    print("training", site, seed)
    return {"score": len(data) + seed, "prep_n": ctx.input(prep).result["n"]}

@exp.gather(per=[], over=train)
def combine(ctx, runs):
    runs.to_csv(ctx.out / "all.csv", index=False)
    return {"total": float(runs.score.sum()), "n": len(runs)}
"""


def shoal_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("shoal")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "shoal.cli.main"]


def run(path: Path, *args: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([*shoal_cmd(), "run", str(path), "--progress", "plain", *args],
                         capture_output=True, text=True, timeout=120, **kw)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def plan_json(cli, path: Path, *args: str) -> dict:
    rc, out, err = cli("plan", path, "--json", *args)
    assert rc == 0, err
    return json.loads(out)


def test_full_run_rerun_and_code_change(cli, write_exp, tmp_path: Path) -> None:
    path = write_exp(PIPE)
    res = run(path, "-j", "2", check=True)
    assert "9 done" in res.stderr
    combine = json.loads((tmp_path / "runs/combine/.shoal-result.json").read_text())
    assert combine["metrics"] == {"total": 4 * 6 + 2 * 3, "n": 6}
    assert (tmp_path / "runs/combine/all.csv").read_text().count("\n") == 7
    assert "training a 1" in (tmp_path / "runs/train/site=a/seed=1/.shoal.log").read_text()
    assert plan_json(cli, path)["run"] == 0
    res = run(path, check=True)
    assert "nothing to run" in res.stderr
    # edit train only: train and combine rerun, prep does not
    path.write_text(path.read_text().replace("len(data) + seed", "len(data) + 2 * seed"))
    doc = plan_json(cli, path)
    assert doc["steps"]["prep"]["run"] == 0
    assert doc["steps"]["train"]["reasons"]["changed"] == 6
    assert doc["steps"]["combine"]["reasons"]["changed"] == 1
    res = run(path, check=True)
    assert "7 done" in res.stderr
    combine = json.loads((tmp_path / "runs/combine/.shoal-result.json").read_text())
    assert combine["metrics"]["total"] == 4 * 6 + 2 * 2 * 3


def test_logs_and_status_commands(cli, write_exp) -> None:
    path = write_exp(PIPE)
    run(path, check=True)
    rc, out, _ = cli("logs", path, "train", "site=b", "seed=2")
    assert rc == 0 and "training b 2" in out
    rc, _, err = cli("logs", path, "train", "site=b")
    assert rc == 2 and "3 tasks" in err
    rc, out, err = cli("logs", path, "prep", "site=a")
    assert rc == 0 and "wrote no output" in err


FAILING = """
import os
exp = shoal.Experiment("fail", grid=shoal.Grid(site=["a", "b", "c"]))

@exp.step(per=["site"])
def first(ctx, site):
    if site == "b":
        print("about to fail on", site)
        raise ValueError(f"bad site {site}")
    return {}

@exp.step(per=["site"], needs=[first])
def second(ctx, site):
    return {}

@exp.gather(per=[], over=second)
def combine(ctx, runs):
    return {}
"""


def test_keep_going_failure_skips_downstream_and_shows_log_tail(cli, write_exp) -> None:
    path = write_exp(FAILING)
    res = run(path)
    assert res.returncode == 1
    assert "ValueError: bad site b" in res.stderr
    assert "skipped" in res.stderr
    _, out, _ = cli("status", path, "--json")
    doc = json.loads(out)
    from shoal.results.states import STATES

    assert doc["steps"]["first"] == {"total": 3, **dict.fromkeys(STATES, 0), "done": 2,
                                     "failed": 1}  # (one vocabulary: every state's count)
    assert doc["steps"]["second"]["done"] == 2 and doc["steps"]["second"]["skipped"] == 1
    assert doc["steps"]["combine"]["done"] == 0
    assert doc["failures"][0]["key"] == "site=b"
    assert "about to fail on b" in doc["failures"][0]["log_tail"]
    _, out, _ = cli("status", path)
    assert "failed: first[site=b]: ValueError: bad site b" in out
    assert "| about to fail on b" in out
    doc = plan_json(cli, path)
    assert doc["steps"]["first"]["reasons"]["failed"] == 1


def test_fail_fast_stops_launching(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("ff", grid=shoal.Grid(i=range(6)))
        @exp.step(per=["i"])
        def t(ctx, i):
            if i == 0:
                raise RuntimeError("first one fails")
            return {}
    """)
    res = run(path, "-j", "1", "--fail-fast")
    assert res.returncode == 1
    done = list((tmp_path / "runs/t").glob("*/.shoal-result.json"))
    assert len(done) < 5
    assert f"{len(done)} done, 1 failed, {5 - len(done)} not started" in res.stderr  # (said)


def test_retries_recover_a_flaky_task(write_exp, tmp_path: Path) -> None:
    path = write_exp(f"""
        import pathlib
        exp = shoal.Experiment("flaky", grid=shoal.Grid(i=range(2)))
        @exp.step(per=["i"], retries=2)
        def t(ctx, i):
            marker = pathlib.Path({str(tmp_path)!r}) / f"tries-{{i}}"
            n = int(marker.read_text()) + 1 if marker.exists() else 1
            marker.write_text(str(n))
            assert not (ctx.out / "junk").exists(), "a retry starts from a clean folder"
            (ctx.out / "junk").write_text("x")
            if i == 1 and n < 3:
                raise RuntimeError(f"flaky {{n}}")
            return {{"tries": n, "attempt": ctx.attempt}}
    """)
    run(path, check=True)
    res = json.loads((tmp_path / "runs/t/i=1/.shoal-result.json").read_text())
    assert res["metrics"] == {"tries": 3, "attempt": 3}
    log = (tmp_path / "runs/t/i=1/.shoal.log").read_text()
    assert "flaky 1" in log and "attempt 3" in log


def test_cli_retries_flag(write_exp, tmp_path: Path) -> None:
    path = write_exp(f"""
        import pathlib
        exp = shoal.Experiment("flaky", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"])
        def t(ctx, i):
            marker = pathlib.Path({str(tmp_path)!r}) / "tries"
            n = int(marker.read_text()) + 1 if marker.exists() else 1
            marker.write_text(str(n))
            if n < 2:
                raise RuntimeError("once")
            return {{}}
    """)
    assert run(path).returncode == 1
    (tmp_path / "tries").unlink()
    run(path, "--retries", "1", check=True)


def test_timeout_kills_the_task(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        import time
        exp = shoal.Experiment("slow", grid=shoal.Grid(i=range(2)))
        @exp.step(per=["i"], timeout=1)
        def t(ctx, i):
            if i == 1:
                time.sleep(60)
            return {}
        exp.command("c", "sleep 60", per=["i"], timeout="1s")
    """)
    t0 = time.time()
    res = run(path, "-j", "4")
    assert time.time() - t0 < 30
    assert res.returncode == 1
    assert res.stderr.count("timeout after 1 s") == 3
    assert (tmp_path / "runs/t/i=0/.shoal-result.json").exists()
    err = json.loads((tmp_path / "runs/t/i=1/.shoal-error.json").read_text())
    assert err["status"] == "failed" and "timeout" in err["error"]


def test_worker_death_fails_only_its_task(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        import ctypes, os
        exp = shoal.Experiment("die", grid=shoal.Grid(i=range(6)))
        @exp.step(per=["i"])
        def t(ctx, i):
            if i == 1:
                ctypes.string_at(0)          # segfault
            if i == 3:
                os._exit(7)
            return {"i": i}
    """)
    res = run(path, "-j", "2")
    assert res.returncode == 1
    assert "worker process died (killed by SIGSEGV)" in res.stderr
    assert "worker process died (exit status 7)" in res.stderr
    done = sorted(p.parent.name for p in (tmp_path / "runs/t").glob("*/.shoal-result.json"))
    assert done == ["i=0", "i=2", "i=4", "i=5"]


def test_threads_and_gpu_slots_seen_inside_tasks(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        import os, time
        exp = shoal.Experiment("env", grid=shoal.Grid(i=range(8)))
        @exp.step(per=["i"], cpus=2)
        def cpu(ctx, i):
            return {k: os.environ.get(k) for k in
                    ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "CUDA_VISIBLE_DEVICES")} | {"threads": ctx.threads, "device": ctx.device}
        @exp.step(per=["i"], gpus=0.5)
        def gpu(ctx, i):
            t0 = time.time()
            time.sleep(0.3)
            return {"cvd": os.environ["CUDA_VISIBLE_DEVICES"], "device": ctx.device,
                    "t0": t0, "t1": time.time()}
        exp.command("cmd", "sh -c 'echo $OMP_NUM_THREADS $CUDA_VISIBLE_DEVICES > {out}/env'",
                    per=["i"], cpus=3)
    """)
    run(path, "-j", "4", "--gpus", "0,1", check=True)
    m = json.loads((tmp_path / "runs/cpu/i=0/.shoal-result.json").read_text())["metrics"]
    assert m == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                 "CUDA_VISIBLE_DEVICES": "", "threads": 2, "device": "cpu"}
    assert (tmp_path / "runs/cmd/i=3/env").read_text().split() == ["3"]
    spans = []
    for k in range(8):
        g = json.loads((tmp_path / f"runs/gpu/i={k}/.shoal-result.json").read_text())["metrics"]
        assert g["cvd"] in ("0", "1") and g["device"] == "cuda:0"
        spans.append((g["cvd"], g["t0"], g["t1"]))
    for dev in ("0", "1"):  # gpus=0.5: never more than two tasks on one device at a time
        mine = [s for s in spans if s[0] == dev]
        for _, t0, _ in mine:
            assert sum(1 for _, a, b in mine if a <= t0 < b) <= 2


def test_gpu_request_without_gpus_is_a_clear_error(write_exp) -> None:
    path = write_exp("""
        exp = shoal.Experiment("g", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"], gpus=1)
        def t(ctx, i):
            return {}
    """)
    res = run(path, "--gpus", "none")
    assert res.returncode == 2
    assert "step 't' asks for gpus=1" in res.stderr and "Traceback" not in res.stderr


def test_gpus_named_by_uuid_are_handed_out_by_name(write_exp, tmp_path: Path) -> None:
    """Bug: CUDA_VISIBLE_DEVICES of UUIDs (an allocation of MIG slices or of GPUs 2 and 3 on
    a shared node) was renumbered 0, 1…, so tasks ran on devices outside it; and a typo
    (--gpus O) silently meant device 0."""
    from shoal.errors import ShoalError
    from shoal.schedule.slots import parse_gpu_list

    assert parse_gpu_list("0, 2,2") == ["0", "2"]
    assert parse_gpu_list("MIG-4f1b/1/0,GPU-8a9c-77") == ["MIG-4f1b/1/0", "GPU-8a9c-77"]
    assert parse_gpu_list("none") == [] and parse_gpu_list("") == []
    assert parse_gpu_list("NoDevFiles", "CUDA_VISIBLE_DEVICES") == []  # (Slurm, no GPUs)
    assert parse_gpu_list("1,x,2", "CUDA_VISIBLE_DEVICES") == ["1"]  # (CUDA's own rule)
    with pytest.raises(ShoalError, match="'O' is not a GPU"):
        parse_gpu_list("O")
    path = write_exp("""
        import os
        exp = shoal.Experiment("uuid", grid=shoal.Grid(i=range(4)))
        @exp.step(per=["i"], gpus=1)
        def t(ctx, i):
            return {"cvd": os.environ["CUDA_VISIBLE_DEVICES"], "device": ctx.device}
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "GPU-aaaa-1,GPU-bbbb-2"}
    run(path, "-j", "2", check=True, env=env)
    seen = {json.loads((tmp_path / f"runs/t/i={k}/.shoal-result.json").read_text())
            ["metrics"]["cvd"] for k in range(4)}
    assert seen == {"GPU-aaaa-1", "GPU-bbbb-2"}
    res = run(path, "--gpus", "O")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--gpus='O': 'O' is not a GPU" in res.stderr


def test_second_controller_is_refused_while_readers_work(cli, write_exp, tmp_path) -> None:
    path = write_exp(PIPE)
    with RootLock(tmp_path / "runs").acquire():
        res = run(path)
        assert res.returncode == 2
        assert "another controller" in res.stderr and "shoal status" in res.stderr
        rc, _, _ = cli("plan", path)
        assert rc == 0
        rc, _, _ = cli("status", path)
        assert rc == 0
        rc, _, err = cli("status", path, "--rescan")  # (it writes the store: it waits)
        assert rc == 2
        assert "shoal status --rescan needs it to end" in err
        assert "(without --rescan) keep working" in err


def test_command_step_quotes_hostile_values(write_exp, tmp_path: Path) -> None:
    hostile = ["a 0", 'a"=0"', "a'; echo foo", "$(touch pwned)", "x\ny"]
    path = write_exp(f"""
        exp = shoal.Experiment("q", grid=shoal.Grid(name={hostile!r}))
        exp.command("w", "printf %s {{name}} > {{out}}/name.txt", per=["name"])
    """)
    run(path, check=True)
    got = sorted(p.read_text() for p in (tmp_path / "runs/w").glob("*/name.txt"))
    assert got == sorted(hostile)
    assert not (tmp_path / "pwned").exists()


def test_ctrl_c_interrupts_then_resume(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        import time
        exp = shoal.Experiment("stop", grid=shoal.Grid(i=range(4)))
        @exp.step(per=["i"])
        def t(ctx, i):
            (ctx.out / "started").write_text("1")
            for _ in range(600):
                if ctx.should_stop():
                    (ctx.out / "saw-stop").write_text("1")
                    return shoal.Requeue
                time.sleep(0.05)
            return {}
    """)
    proc = subprocess.Popen([*shoal_cmd(), "run", str(path), "-j", "2", "--progress", "plain"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(list((tmp_path / "runs/t").glob("*/started"))) < 2:
        assert time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert len(list((tmp_path / "runs/t").glob("*/saw-stop"))) == 2
    assert not list((tmp_path / "runs/t").glob("*/.shoal-result.json"))
    # the next run resumes: patch the task to finish at once
    path.write_text(path.read_text().replace("range(600)", "range(0)"))
    res = run(path, check=True)
    assert "4 done" in res.stderr


def test_only_runs_a_slice_and_a_later_gather_sees_every_result(cli, write_exp, tmp_path):
    path = write_exp(PIPE)
    run(path, "--only", "site=a", check=True)
    doc = plan_json(cli, path)
    assert doc["steps"]["train"]["done"] == 3 and doc["steps"]["combine"]["done"] == 0
    run(path, check=True)
    # regression: the gather's table must hold the metrics of tasks done in earlier runs too
    combine = json.loads((tmp_path / "runs/combine/.shoal-result.json").read_text())
    assert combine["metrics"] == {"total": 4 * 6 + 2 * 3, "n": 6}


@pytest.mark.skipif(not hasattr(os, "posix_spawn"), reason="needs posix_spawn")
def test_missing_command_program(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("m", grid=shoal.Grid(i=[0]))
        exp.command("c", "no-such-program-xyz {i}", per=["i"])
    """)
    res = run(path)
    assert res.returncode == 1 and "exited with status 127" in res.stderr
    assert "cannot start" in (tmp_path / "runs/c/i=0/.shoal.log").read_text()


def test_review_fixes(cli, write_exp, tmp_path: Path) -> None:
    """Config recorded for read-only views; EXP after --config; cumulative attempts;
    a clean Ctrl-C stop exits 130; cpus above -j warns."""
    path = write_exp("""
        import os
        N = shoal.config("n", 2)
        exp = shoal.Experiment("rf", grid=shoal.Grid(i=range(N)))
        @exp.step(per=["i"], cpus=4)
        def t(ctx, i):
            if os.environ.get("FAIL"):
                raise RuntimeError("fail")
            return {"attempt": ctx.attempt}
    """)
    res = subprocess.run([*shoal_cmd(), "run", "--config", "n=3", str(path), "-j", "2",
                          "--progress", "none"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FAIL": "1"})
    assert res.returncode == 1
    assert "warning: step 't' asks for cpus=4; it runs with 2" in res.stderr
    res = run(path, "--config", "n=3", check=True)
    m = json.loads((tmp_path / "runs/t/i=0/.shoal-result.json").read_text())["metrics"]
    assert m == {"attempt": 2}  # attempts go on across runs for the same fingerprint
    rc, out, err = cli("status", path, "--json")
    assert rc == 0 and json.loads(out)["total"] == 3 and "config of the last run" in err
    rc, out, _ = cli("status", path, "--json", "--config", "n=2")
    assert json.loads(out)["total"] == 2


def _ctrl_c_once_started(path: Path, started: list[Path], *args: str) -> tuple[str, float]:
    """`shoal run ARGS` in the background, SIGINT once every file of ``started`` exists;
    returns its stderr (it must exit 130) and the seconds from the SIGINT to its exit."""
    proc = subprocess.Popen([*shoal_cmd(), "run", str(path), "--progress", "none", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not all(p.exists() for p in started):
        assert time.time() < deadline and proc.poll() is None, proc.stderr
        time.sleep(0.1)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    return err, time.time() - t0


def test_ctrl_c_stops_a_shell_command_and_its_children(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("cs", grid=shoal.Grid(i=[0]))
        exp.command("c", "touch {out}/started && sleep 41.5 && touch {out}/finished", per=["i"])
    """)
    _, took = _ctrl_c_once_started(path, [tmp_path / "runs/c/i=0/started"], "--grace", "10")
    assert took < 8  # the command got SIGTERM at once, not the grace's kill
    left = subprocess.run(["pgrep", "-f", "sleep 41.5"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "the shell's child survived"
    assert not (tmp_path / "runs/c/i=0/finished").exists()


def test_ctrl_c_kills_what_a_stopped_shell_left_at_the_grace_deadline(write_exp, tmp_path):
    """Bug: the shell of a command exits at once on SIGTERM; a program it ran that ignores
    SIGTERM (or takes long to save) went on running, writing into the task folder, after the
    run ended. Now what a stopped command leaves in its process group gets the grace period,
    then SIGKILL, before `shoal run` returns (task 0 ignores SIGTERM, task 1 saves first)."""
    (tmp_path / "ign.py").write_text(
        "import os, signal, sys, time\n"
        "def save(*_):\n"
        "    time.sleep(0.3)\n"
        "    open(sys.argv[1].replace('started', 'saved'), 'w').close()\n"
        "    os._exit(0)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == '0' else save)\n"
        "open(sys.argv[1], 'w').close()\n"
        "time.sleep(43.5)\n")
    path = write_exp("""
        exp = shoal.Experiment("ign", grid=shoal.Grid(i=[0, 1]))
        exp.command("c", "{python} ign.py {out}/started {i} > {out}/o.txt", per=["i"])
    """)
    err, took = _ctrl_c_once_started(
        path, [tmp_path / f"runs/c/i={i}/started" for i in (0, 1)], "--grace", "2", "-j", "2")
    assert "2 interrupted" in err
    assert 1.5 < took < 15  # the grace period, then the kill
    left = subprocess.run(["pgrep", "-f", "ign.py"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a program the stopped shell ran survived the run"
    assert (tmp_path / "runs/c/i=1/saved").exists()  # (it had its grace period)


def test_bundles_of_short_tasks_survive_a_timeout_inside_a_bundle(write_exp, tmp_path):
    """Short tasks are sent to workers in bundles; a task killed inside a bundle fails
    alone, and the tasks queued behind it run afterwards (their attempt is not used up)."""
    path = write_exp("""
        import time
        exp = shoal.Experiment("bundle", grid=shoal.Grid(i=range(300)))
        @exp.step(per=["i"], timeout=1)
        def t(ctx, i):
            if i == 150:
                time.sleep(30)
            return {"attempt": ctx.attempt}
    """)
    res = run(path, "-j", "2")
    assert res.returncode == 1
    assert res.stderr.count("timeout after 1 s") == 1
    done = {p.parent.name: json.loads(p.read_text())["metrics"]["attempt"]
            for p in (tmp_path / "runs/t").glob("*/.shoal-result.json")}
    assert len(done) == 299 and "i=150" not in done
    assert set(done.values()) == {1}


def test_skips_counted_once_and_allow_missing_only_over_gathered_edges(write_exp, tmp_path):
    """Review regressions: a task with two failed upstreams is skipped once (and does not
    release an allow_missing gather early); a failed needs= upstream skips the gather."""
    path = write_exp("""
        exp = shoal.Experiment("sk", grid=shoal.Grid(seed=[1, 2]))
        @exp.step(per=["seed"])
        def a(ctx, seed):
            if seed == 1:
                raise RuntimeError("a fails")
            return {}
        @exp.step(per=["seed"])
        def b(ctx, seed):
            if seed == 1:
                raise RuntimeError("b fails")
            return {}
        @exp.step(per=["seed"], needs=[a, b])
        def c(ctx, seed):
            return {"v": seed}
        @exp.gather(per=[], over=c, allow_missing=True)
        def g(ctx, runs):
            return {"n": len(runs)}
        @exp.step(per=[])
        def base(ctx):
            raise RuntimeError("base fails")
        @exp.gather(per=[], over=c, needs=[base], allow_missing=True)
        def h(ctx, runs):
            return {"n": len(runs)}
    """)
    res = run(path, "-j", "1")
    assert res.returncode == 1
    assert "2 skipped" in res.stderr  # c[seed=1] once, and h (its needs= upstream failed)
    g = json.loads((tmp_path / "runs/g/.shoal-result.json").read_text())
    assert g["metrics"] == {"n": 1}  # ran after c[seed=2], on what succeeded
    assert not (tmp_path / "runs/h/.shoal-result.json").exists()


def test_fail_fast_lets_running_tasks_finish(write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        import time
        exp = shoal.Experiment("ff2", grid=shoal.Grid(i=range(4)))
        @exp.step(per=["i"])
        def t(ctx, i):
            if i == 0:
                time.sleep(0.5)
                raise RuntimeError("fails")
            if i == 1:
                time.sleep(3)
            return {}
    """)
    res = run(path, "-j", "2", "--fail-fast")
    assert res.returncode == 1
    assert (tmp_path / "runs/t/i=1/.shoal-result.json").exists()  # was running: finished
    assert not (tmp_path / "runs/t/i=3/.shoal-result.json").exists()  # never launched
