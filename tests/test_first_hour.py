"""The first hour of a new user: the rough edges found trying shoal from a fresh clone, one
test per behaviour."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from conftest import start_until
from test_run import run

ROOT = Path(__file__).resolve().parent.parent


def test_progress_interval_prints_a_heartbeat_while_no_count_moves(write_exp) -> None:
    """Bug: --progress-interval 30 printed nothing for 90 s (a line only when a count
    moved)."""
    path = write_exp("""
        import time
        exp = shoal.Experiment("slow", grid=shoal.Grid(i=[0]))

        @exp.step(per=["i"])
        def wait(ctx, i):
            time.sleep(2.6)
            return {}
    """)
    res = run(path, "--progress-interval", "0.5", check=True)
    beats = [ln for ln in res.stderr.splitlines() if ln.startswith("[0:00:0")]
    assert len(beats) >= 4, res.stderr  # (about every 0.5 s while the one task runs)


def test_streamflow_stopped_by_ctrl_c_is_interrupted_not_a_crash(tmp_path: Path) -> None:
    """Bug: a Ctrl-C'd streamflow task logged `RuntimeError: stop requested` like a crash;
    it returns shoal.Requeue now (and the next run trains it again)."""
    pytest.importorskip("torch")
    root = tmp_path / "runs"
    args = ["run", str(ROOT / "examples/streamflow"), "--root", str(root), "--config",
            "sites=1", "factors=[0]", "seeds=1", "epochs=5000", "--progress", "plain"]
    log = root / "train/site=01022500/factor=0/seed=0/.shoal-history.jsonl"
    proc = start_until(args, lambda: log.exists() and log.stat().st_size > 60, timeout=120)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "1 interrupted" in err, err
    text = (log.parent / ".shoal.log").read_text()
    assert "requeued" in text and "Error" not in text and "Warning" not in text


def test_long_training_logs_no_warning(tmp_path: Path) -> None:
    """Bug: long_training warned on every run (`float(loss)` on a tensor that requires
    grad)."""
    pytest.importorskip("torch")
    root = tmp_path / "runs"
    res = subprocess.run([*__import__("test_run").shoal_cmd(), "run",
                          str(ROOT / "examples/long_training"), "--root", str(root),
                          "--config", "epochs=5", "seeds=1", "--progress", "none"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    logs = [p.read_text() for p in root.rglob(".shoal.log")]
    assert not any("Warning" in t for t in logs), logs


def test_every_option_of_every_command_has_help() -> None:
    """Bug: --progress and --format had no help text."""
    import argparse

    from shoal.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{name} {a.option_strings or a.dest}"
            for name, p in [("shoal", parser), *sub.choices.items()]
            for a in p._actions
            if not a.help and not isinstance(a, (argparse._HelpAction,
                                                 argparse._SubParsersAction))]
    assert bare == []


def test_exp_defaults_to_experiment_py_in_the_current_folder(tmp_path: Path,
                                                             monkeypatch) -> None:
    """Bug: `[EXP]` showed as optional, but `shoal plan` inside examples/streamflow failed."""
    from shoal.cli.main import main

    (tmp_path / "experiment.py").write_text(
        "import shoal\nexp = shoal.Experiment('here', grid=shoal.Grid(i=[1, 2]))\n"
        "@exp.step(per=['i'])\ndef s(ctx, i):\n    return {}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 0
    assert main(["run", "--progress", "none"]) == 0
    assert (tmp_path / "runs/s/i=2/.shoal-result.json").exists()
    (tmp_path / "experiment.py").unlink()
    assert main(["plan"]) == 2  # (none here: the error says what to give)


SCALED = """
SCALE = shoal.config("scale", 1)
exp = shoal.Experiment("sw", grid=shoal.Grid(i=[0, 1, 2]))

@exp.step(per=["i"], version=SCALE)
def fit(ctx, i):
    return {"value": i * SCALE}
"""


def test_switching_configs_never_replaces_done_results_by_accident(write_exp, tmp_path) -> None:
    """Bug: the demo's default config, run where a `--config epochs=20000` run had finished,
    silently replaced those results (one "note" line)."""
    import json

    path = write_exp(SCALED)
    run(path, "--config", "scale=3", check=True)
    result = tmp_path / "runs/fit/i=2/.shoal-result.json"
    before = result.read_text()
    res = run(path)  # the defaults now: would replace 3 done results
    assert res.returncode == 2, res.stderr
    assert "used --config scale=3; this one uses (defaults) and would replace 3 done results " \
           "of that run (fit 3). Nothing ran." in res.stderr
    assert "--root DIR" in res.stderr and "--yes" in res.stderr
    assert result.read_text() == before  # nothing touched
    res = run(path, "--root", str(tmp_path / "other"), check=True)  # a root per config: both
    assert json.loads(result.read_text())["metrics"]["value"] == 6
    res = run(path, "--yes", check=True)  # asked for: replaced
    assert json.loads(result.read_text())["metrics"]["value"] == 2
    assert run(path, "--config", "scale=1", check=True).returncode == 0  # (same grid: nothing)


def test_the_readme_quick_start_commands_work_as_written(tmp_path: Path) -> None:
    """A newcomer check: the README's block after the quick start, copied literally into a
    clean shell (only the venv the quick start made, found as .venv), works on the demo."""
    import os
    import re
    import sys

    pytest.importorskip("torch")
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").exists():
        pytest.skip("not inside a virtual environment (make test makes .venv)")
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- newcomer:[^>]*-->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README.md lost its newcomer block"
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {"HOME": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin",
           "SHOAL_ROOT": str(tmp_path / "runs"), "LANG": "C.UTF-8"}
    res = subprocess.run(["bash", "-e", "-c", block.group(1)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "n: sites (each the mean of 3 seeds)" in res.stdout
    assert (tmp_path / "report.html").exists() and not os.path.exists(ROOT / "report.html")
