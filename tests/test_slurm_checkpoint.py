"""Checkpoints on the real local Slurm: preemption by the `urgent` partition, `scontrol
requeue` mid-run, and a task longer than the longest job running as chained segments.
Each resumes from its checkpoint and ends with exactly the uninterrupted result."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from test_run import shoal_cmd
from test_slurm import _need_slurm

TRAINING = """
    import time
    import numpy as np
    STEPS = shoal.config("steps", 60)
    PAUSE = shoal.config("pause", 0.0)
    exp = shoal.Experiment("ck", grid=shoal.Grid(seed=[7]))
    @exp.step(per=["seed"], time=shoal.config("time", "10m"))
    def train(ctx, seed):
        state = ctx.checkpoint.load()
        if state is None:
            rng = np.random.default_rng(seed)
            state = {"step": 0, "w": rng.normal(size=4), "rng": rng.bit_generator.state}
        resumed_at = state["step"]
        print("starting at", resumed_at, flush=True)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        w = state["w"]
        for k in range(state["step"], STEPS):
            w = w - 0.1 * (w - rng.normal(size=4)) + 0.01 * np.tanh(w)
            ctx.checkpoint.save({"step": k + 1, "w": w, "rng": rng.bit_generator.state})
            time.sleep(PAUSE)
            if ctx.should_stop():
                print("stopping at", k + 1, flush=True)
                return shoal.Requeue
        return {"w": [float(v) for v in w], "resumed_at": resumed_at}
"""

FAST_POLL = "poll_s = 1\nmax_poll_s = 2\n"


def reference(path: Path, tmp_path: Path, steps: int) -> list[float]:
    res = subprocess.run([*shoal_cmd(), "run", str(path), "--root", str(tmp_path / "ref"),
                          "--progress", "none", "--config", f"steps={steps}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "ref/train/seed=7/.shoal-result.json").read_text())
    return doc["metrics"]["w"]


def start(path: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    (tmp_path / "fast.toml").write_text(FAST_POLL)
    return subprocess.Popen([*shoal_cmd(), "run", str(path), "--profile", "fast",
                             "--progress", "plain", "--progress-interval", "2", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_checkpoints(tmp_path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    folder = tmp_path / "runs/train/seed=7/.shoal-checkpoints"
    deadline = time.time() + timeout
    while True:
        files = sorted(folder.glob("ckpt-*.pkl")) if folder.exists() else []
        if files and int(files[-1].name[5:11]) >= n:
            return
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    return err


def result(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "runs/train/seed=7/.shoal-result.json").read_text())


def arrays(tmp_path: Path) -> list[str]:
    return (tmp_path / "runs/.shoal/slurm/jobs").read_text().splitlines()


def test_preempted_task_resumes_from_its_checkpoint(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    path = write_exp(TRAINING)
    want = reference(path, tmp_path, 60)
    proc = start(path, tmp_path, "--config", "steps=60", "pause=0.15",
                 "--sbatch=--exclusive")
    urgent = None
    try:
        wait_checkpoints(tmp_path, 5, proc)
        urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "--exclusive",
                                 "--output=/dev/null", "--wrap", "sleep 1"],
                                capture_output=True, text=True, check=True).stdout.strip()
        err = finish(proc)
    finally:
        proc.kill()
        if urgent:
            subprocess.run(["scancel", urgent], check=False)
    doc = result(tmp_path)
    assert doc["metrics"]["w"] == want
    assert 5 <= doc["metrics"]["resumed_at"] < 60
    assert len(arrays(tmp_path)) == 2  # preempted, then submitted again
    assert doc["attempt"] == 1, err  # an interruption is not a failed attempt


def test_scontrol_requeue_mid_run_is_survived(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    path = write_exp(TRAINING)
    want = reference(path, tmp_path, 60)
    proc = start(path, tmp_path, "--config", "steps=60", "pause=0.15")
    try:
        wait_checkpoints(tmp_path, 5, proc)
        job = arrays(tmp_path)[0].split("\t")[0]
        subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True)
        finish(proc)
    finally:
        proc.kill()
    doc = result(tmp_path)
    assert doc["metrics"]["w"] == want and doc["metrics"]["resumed_at"] >= 5
    assert len(arrays(tmp_path)) == 1  # Slurm requeued the element itself
    log = next((tmp_path / "runs/logs/train").glob("*_0.out")).read_text()
    assert log.count("starting at") == 0  # the task's own output is in its log, not here
    task_log = (tmp_path / "runs/train/seed=7/.shoal.log").read_text()
    assert task_log.count("starting at") == 2 and "stopping at" in task_log


def test_a_task_longer_than_the_longest_job_runs_in_chained_segments(write_exp,
                                                                      tmp_path: Path) -> None:
    """Slurm sends the USR2 10–30 s into a 1-minute job here: about a minute in all."""
    _need_slurm()
    path = write_exp(TRAINING)
    want = reference(path, tmp_path, 150)
    proc = start(path, tmp_path, "--config", "steps=150", "pause=0.25", "time=3m",
                 "--max-time", "1", "--signal-grace", "30")
    try:
        wait_checkpoints(tmp_path, 2, proc)
        seen = ""
        deadline = time.time() + 60
        while "segment" not in seen and time.time() < deadline:
            seen = subprocess.run([*shoal_cmd(), "status", str(path)], capture_output=True,
                                  text=True).stdout
            time.sleep(1)
        finish(proc, timeout=300)
    finally:
        proc.kill()
    assert "segment 1 of 6" in seen or "segment 2 of 6" in seen, seen
    doc = result(tmp_path)
    assert doc["metrics"]["w"] == want
    jobs = arrays(tmp_path)
    assert len(jobs) >= 2  # one job per segment
    scripts = [p.read_text() for p in (tmp_path / "runs/.shoal/slurm").glob("*/array-0.sh")]
    assert all("--time=00:01:00" in s and "--signal=B:USR2@30" in s for s in scripts)
