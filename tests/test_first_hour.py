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
