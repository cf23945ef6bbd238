"""What tasks return, leave behind or change in their process: the cases an acceptance review
found mishandled (each was a bug)."""

from __future__ import annotations

import json
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
