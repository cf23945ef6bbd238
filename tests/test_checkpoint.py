"""ctx.checkpoint and stop signals: save/load/keep/atomic, fingerprint changes, and a
training stopped by SIGTERM that resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shoal.context.checkpoint import Checkpoints
from test_run import shoal_cmd


def test_save_load_keep_and_writer(tmp_path: Path) -> None:
    ck = Checkpoints(tmp_path, "fp1")
    assert ck.load() is None and ck.latest is None and ck.count == 0
    for k in range(5):
        ck.save({"k": k})
    assert ck.load() == {"k": 4} and ck.count == 5
    files = sorted(p.name for p in ck.folder.iterdir() if p.name.startswith("ckpt-"))
    assert files == ["ckpt-000004.pkl", "ckpt-000005.pkl"]  # keep=2
    assert not list(ck.folder.glob("*.tmp"))

    def writer(path: Path) -> None:
        path.write_bytes(pickle.dumps("custom"))

    path = ck.save(writer=writer, keep=1)
    assert path.suffix == ".bin" and ck.load(reader=lambda p: pickle.loads(p.read_bytes())) \
        == "custom"
    assert len([p for p in ck.folder.iterdir() if p.name.startswith("ckpt-")]) == 1
    # the same fingerprint keeps them (a retry); another drops them (new code or params)
    assert Checkpoints(tmp_path, "fp1").count == 6
    assert Checkpoints(tmp_path, "fp2").load() is None
    assert not ck.folder.exists()


def test_an_unreadable_fingerprint_never_deletes_checkpoints(tmp_path: Path) -> None:
    ck = Checkpoints(tmp_path, "fp")
    ck.save("state")
    (ck.folder / "meta.json").write_text("")  # torn by a kill, or a flaky filesystem
    assert Checkpoints(tmp_path, "other").load() == "state"


def test_a_failed_writer_leaves_the_last_checkpoint(tmp_path: Path) -> None:
    ck = Checkpoints(tmp_path, "fp")
    ck.save("good")

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ck.save(writer=broken)
    assert ck.load() == "good" and not list(ck.folder.glob("*.tmp"))


TRAINING = """
    import time
    import numpy as np
    PAUSE = shoal.config("pause", 0.0)
    exp = shoal.Experiment("ck", grid=shoal.Grid(seed=[0, 1]))
    @exp.step(per=["seed"], retries=0)
    def train(ctx, seed):
        state = ctx.checkpoint.load()
        if state is None:
            rng = np.random.default_rng(seed)
            state = {"step": 0, "w": rng.normal(size=4), "rng": rng.bit_generator.state}
        resumed_at = state["step"]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        w = state["w"]
        for k in range(state["step"], 80):
            x = rng.normal(size=4)
            w = w - 0.1 * (w - x) + 0.01 * np.tanh(w)
            ctx.checkpoint.save({"step": k + 1, "w": w, "rng": rng.bit_generator.state})
            time.sleep(PAUSE)
            if ctx.should_stop():
                return shoal.Requeue
        return {"w": [float(v) for v in w], "resumed_at": resumed_at}
"""


def test_sigterm_then_resume_equals_an_uninterrupted_run(write_exp, tmp_path: Path) -> None:
    path = write_exp(TRAINING)
    ref = subprocess.run([*shoal_cmd(), "run", str(path), "--root", str(tmp_path / "ref"),
                          "--progress", "none"], capture_output=True, text=True, timeout=120)
    assert ref.returncode == 0, ref.stderr
    root = tmp_path / "runs"
    proc = subprocess.Popen([*shoal_cmd(), "run", str(path), "-j", "2", "--progress", "none",
                             "--config", "pause=0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:  # both trainings are under way
            saved = [sorted((root / f"train/seed={s}/.shoal-checkpoints").glob("ckpt-*.pkl"))
                     for s in (0, 1)]
            if all(f and int(f[-1].name[5:11]) >= 10 for f in saved):
                break
            assert time.time() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "2 interrupted" in err and "failed" not in err
    for s in (0, 1):
        error = json.loads((root / f"train/seed={s}/.shoal-error.json").read_text())
        assert error["status"] == "interrupted"
    status = subprocess.run([*shoal_cmd(), "status", str(path), "--json"],
                            capture_output=True, text=True)
    assert json.loads(status.stdout)["steps"]["train"]["failed"] == 0
    res = subprocess.run([*shoal_cmd(), "run", str(path), "--progress", "none"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for s in (0, 1):
        got = json.loads((root / f"train/seed={s}/.shoal-result.json").read_text())
        want = json.loads((tmp_path / f"ref/train/seed={s}/.shoal-result.json").read_text())
        assert got["metrics"]["w"] == want["metrics"]["w"]  # exactly
        assert 10 <= got["metrics"]["resumed_at"] < 80 and want["metrics"]["resumed_at"] == 0
        assert got["attempt"] == 2  # the interrupted attempt did not use up a retry
        assert not (root / f"train/seed={s}/.shoal-checkpoints").exists()  # done: removed


def test_requeues_are_bounded(write_exp, cli, tmp_path: Path) -> None:
    """A task that asks to be requeued every time (not stopped by the user) goes out again
    up to --max-requeues times, then fails; its retries are not used meanwhile."""
    path = write_exp("""
        exp = shoal.Experiment("rq", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"], retries=3)
        def t(ctx, i):
            n = ctx.checkpoint.load() or 0
            ctx.checkpoint.save(n + 1)
            print("run", n + 1)
            return shoal.Requeue
    """)
    rc, _, err = cli("run", path, "--max-requeues", "2", "--progress", "none")
    assert rc == 1 and "interrupted 3 times (more than max_requeues=2)" in err, err
    log = (tmp_path / "runs/t/i=0/.shoal.log").read_text()
    assert log.count("run ") == 3  # 1 + 2 requeues, and no retry after that
