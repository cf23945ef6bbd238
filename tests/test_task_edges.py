"""What tasks return, leave behind or change in their process: the cases an acceptance review
found mishandled (each was a bug)."""

from __future__ import annotations

import json
import subprocess
import time
import warnings
from pathlib import Path

from test_run import run


def _result(tmp_path: Path, folder: str) -> dict:
    return json.loads((tmp_path / "runs" / folder / ".shoal-result.json").read_text())


def _error(tmp_path: Path, folder: str) -> dict:
    return json.loads((tmp_path / "runs" / folder / ".shoal-error.json").read_text())


def test_numpy_metrics_are_stored_as_numbers(write_exp, tmp_path: Path, cli) -> None:
    """Bug: a numpy integer or array among the returned metrics passed the worker's check
    but stopped the controller (TypeError in the store) with a traceback."""
    path = write_exp("""
        import numpy as np
        exp = shoal.Experiment("np", grid=shoal.Grid(i=range(6)))

        @exp.step(per=["i"])
        def s(ctx, i):
            a = np.arange(10)
            return {"n_correct": a.sum() + i, "arr": a[:3], "acc": np.float32(0.5)}

        @exp.gather(per=[], over=s)
        def total(ctx, runs):
            return {"total": int(runs.n_correct.sum())}
    """)
    res = run(path, "-j", "2")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert _result(tmp_path, "s/i=2")["metrics"] == {"n_correct": 47, "arr": [0, 1, 2],
                                                     "acc": 0.5}
    assert _result(tmp_path, "total")["metrics"] == {"total": 45 * 6 + 15}
    rc, out, err = cli("results", path, "--step", "s", "--format", "json")
    assert rc == 0, err
    assert sorted(r["n_correct"] for r in json.loads(out)) == [45, 46, 47, 48, 49, 50]


def test_a_metrics_file_that_is_not_a_json_object_fails_the_task(write_exp, tmp_path):
    """Bug: an unparseable metrics.json was ignored and the task counted done without its
    metrics; now the task fails, naming the file."""
    path = write_exp("""
        exp = shoal.Experiment("mj", grid=shoal.Grid(i=[0, 1, 2]))

        @exp.step(per=["i"])
        def f(ctx, i):
            (ctx.out / "metrics.json").write_text(['{"w": 2', '[1, 2]', '{"w": 2}'][i])

        exp.command("c", "printf '%s' '{{\\"w\\": ' > {out}/metrics.json", per=["i"])
    """)
    res = run(path, "-j", "2")
    assert res.returncode == 1
    assert "is not valid JSON" in _error(tmp_path, "f/i=0")["error"]
    assert "holds a list, not a JSON object" in _error(tmp_path, "f/i=1")["error"]
    assert _result(tmp_path, "f/i=2")["metrics"] == {"w": 2}
    err = _error(tmp_path, "c/i=0")["error"]
    assert err.startswith("the command exited 0, but ") and "metrics.json" in err


def test_each_function_task_starts_in_the_experiment_folder(write_exp, tmp_path) -> None:
    """Bug: a task's os.chdir moved every later task of the same worker process (relative
    paths then resolved elsewhere)."""
    path = write_exp("""
        import os
        exp = shoal.Experiment("cd", grid=shoal.Grid(i=range(8)))

        @exp.step(per=["i"])
        def wander(ctx, i):
            os.chdir("/")
            return {}

        @exp.step(per=["i"], needs=[wander])
        def after(ctx, i):
            return {"cwd": os.getcwd()}
    """)
    res = run(path, "-j", "1")
    assert res.returncode == 0, res.stderr
    for i in range(8):
        assert _result(tmp_path, f"after/i={i}")["metrics"]["cwd"] == str(tmp_path)


def test_a_shell_s_status_for_a_killed_program_is_explained(write_exp, tmp_path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("sig", grid=shoal.Grid(i=[0]))
        exp.command("c", "sh -c 'kill -9 $$'; exit $?", per=["i"])
    """)
    res = run(path)
    assert res.returncode == 1
    assert _error(tmp_path, "c/i=0")["error"] == (
        "command exited with status 137 (as a shell does when what it ran was killed by "
        "SIGKILL)")


def test_logs_and_only_name_values_the_way_users_type_them(write_exp, tmp_path, cli):
    """Bug: `shoal logs ... lr=3` (for 3.0), `lr=1e-5` (for 1e-05) or `flag=True` matched
    no task and the error blamed missing dimensions; `--only lr=1e-5` was refused."""
    path = write_exp("""
        exp = shoal.Experiment("odd", grid=shoal.Grid(lr=[1e-5, 3.0], flag=[True, False],
                                                       name=["A", "%41"]))

        @exp.step(per=["lr", "flag", "name"])
        def s(ctx, lr, flag, name):
            print("task", lr, flag, name)
    """)
    assert run(path, "-j", "2").returncode == 0
    for args in (["lr=3", "flag=True", "name=A"], ["lr=1e-5", "flag=false", "name=%41"],
                 ["lr=0.00001", "flag=yes", "name=%2541"]):
        rc, out, err = cli("logs", path, "s", *args)
        assert rc == 0, err
        assert "task" in out
    rc, _, err = cli("logs", path, "s", "lr=2", "flag=true", "name=A")
    assert rc == 2
    assert "'lr=2': '2' is not a value of dimension 'lr' of 's' (values: 1e-05, 3.0)" in err
    rc, out, err = cli("plan", path, "--json", "--only", "lr=1e-5", "flag=True")
    assert rc == 0, err


def test_a_killed_task_s_log_says_why(write_exp, tmp_path) -> None:
    """Bug: the log of a task killed by its timeout ended without a word about it."""
    path = write_exp("""
        import time
        exp = shoal.Experiment("slow", grid=shoal.Grid(i=[0]))

        @exp.step(per=["i"], timeout=0.5)
        def f(ctx, i):
            print("working", flush=True)
            time.sleep(30)

        exp.command("c", "echo working; sleep 30", per=["i"], timeout=0.5)
    """)
    res = run(path, "-j", "2")
    assert res.returncode == 1
    for step in ("f", "c"):
        log = (tmp_path / f"runs/{step}/i=0/.shoal.log").read_text()
        assert "working" in log and "shoal: timeout after 0.5 s" in log, (step, log)


def test_summaries_of_clashing_text_and_infinite_metrics(write_exp, tmp_path, cli) -> None:
    """Bugs: `--metric a` summarised the parameter a where a metric had the same name; a
    text metric was counted as missing; a step with only text metrics printed pandas'
    "Empty DataFrame"; inf among the values leaked numpy warnings."""
    path = write_exp("""
        exp = shoal.Experiment("m", grid=shoal.Grid(a=[1, 2], seed=[0, 1]))

        @exp.step(per=["a", "seed"])
        def s(ctx, a, seed):
            return {"a": 10 * a + seed, "dev": "cpu", "loss": float("inf") if seed else 1.0}

        @exp.step(per=["a"])
        def t(ctx, a):
            return {"note": "text"}
    """)
    assert run(path, "-j", "2").returncode == 0
    rc, out, err = cli("results", path, "--step", "s", "--by", "a", "--metric", "a",
                       "--format", "csv")
    assert rc == 0, err
    rows = [line.split(",") for line in out.splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("1", "seed", "metric_a", "10.5"),
                                                         ("2", "seed", "metric_a", "20.5")]
    rc, _, err = cli("results", path, "--step", "s", "--by", "a", "--metric", "dev")
    assert rc == 2 and "the values of 'dev' are not numbers (e.g. 'cpu')" in err
    rc, out, err = cli("results", path, "--step", "t", "--summary")
    assert rc == 2 and "Empty DataFrame" not in out + err
    assert "step 't' has no numeric metrics to summarise" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a RuntimeWarning from numpy would raise)
        rc, out, err = cli("results", path, "--step", "s", "--by", "a", "--metric", "loss")
    assert rc == 0, err


def test_processes_a_function_task_left_running_end_with_the_run(write_exp, tmp_path) -> None:
    """Bug: a process started by a function task and never waited for outlived the run."""
    path = write_exp("""
        import subprocess
        exp = shoal.Experiment("bg", grid=shoal.Grid(i=[0, 1]))

        @exp.step(per=["i"])
        def f(ctx, i):
            subprocess.Popen(["sleep", "37.25"])
    """)
    assert run(path, "-j", "2").returncode == 0
    deadline = time.monotonic() + 2  # (killed as the run ended: gone a moment later)
    while subprocess.run(["pgrep", "-f", "sleep 37.25"], capture_output=True).stdout:
        assert time.monotonic() < deadline, "a process the task started outlived the run"
        time.sleep(0.05)


def test_a_broken_pipe_inside_shoal_is_an_error_not_a_quiet_exit(tmp_path) -> None:
    """A worker that died before it read its first message raised BrokenPipeError in the
    controller, which the CLI took for `shoal results | head` and exited 0 in silence."""
    import subprocess
    import sys

    code = ("import sys, shoal.cli.main as c\n"
            "def boom(args):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
            "c.cmd_plan = boom\nsys.exit(c.main(['plan', 'x']))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0 and "BrokenPipeError" in res.stderr


def test_a_task_path_over_the_system_limit_is_a_plan_time_error(cli, write_exp) -> None:
    """It failed at run time, with an error thousands of characters long and no log."""
    dims = {f"d{k:02d}": ["v" * 240] for k in range(18)}
    path = write_exp(f"""
        exp = shoal.Experiment("long", grid=shoal.Grid(**{dims!r}))
        exp.command("c", "true", per={list(dims)!r})
    """)
    rc, _, err = cli("plan", path)
    assert rc == 2
    assert "over the system's limit" in err and "shorten the values of dimension" in err
    assert len(err) < 600
