"""examples/trak end to end through the CLI: the featurize tasks own their state in TRAK's
shared save_dir (outputs=), so a rerun after retraining gives the scores of a fresh run.

Without the removal of those outputs TRAK keeps the old features ("Model ID 0 already
finalized, skipping") and the rerun's scores mix old features with new target gradients
(example's model.py turns that into a StaleStateError instead)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from test_run import shoal_cmd

pytest.importorskip("torch")
pytest.importorskip("trak")
pytest.importorskip("sklearn")
np = pytest.importorskip("numpy")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "trak"
SMALL = ["--config", "checkpoints=2"]  # about 9 s a run on 2 cores, mostly imports


def shoal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*shoal_cmd(), *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False)


def copy_example(dst: Path) -> Path:
    shutil.copytree(EXAMPLE, dst, ignore=shutil.ignore_patterns(
        "runs", "trak_results", "__pycache__"))
    return dst


def run(exp: Path, *config: str):
    """shoal run; the gather's score matrix (a copy: the next run rewrites the file)."""
    res = shoal("run", exp, "-j", "2", "--progress", "none", *SMALL, *config)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return np.load(exp / "runs" / "scores" / "scores.npy").copy()


def run_side_by_side(exps: list[Path], *config: str) -> list:
    """``run`` for independent experiment folders at once, one worker each (most of a run is
    the worker importing torch, trak and scikit-learn)."""
    cmd = [*shoal_cmd(), "run", "-j", "1", "--progress", "none", *SMALL, *config]
    procs = [subprocess.Popen([*cmd, str(e)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for e in exps]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    return [np.load(e / "runs" / "scores" / "scores.npy").copy() for e in exps]


def plan(exp: Path, *config: str) -> dict:
    res = shoal("plan", exp, "--json", *SMALL, *config)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_trak_rerun_after_retraining_equals_a_fresh_run(tmp_path: Path) -> None:
    exp = copy_example(tmp_path / "a")
    a = run(exp)
    assert a.shape == (300, 50)
    save_dir = exp / "trak_results"  # TRAK's save_dir: in the experiment folder
    assert sorted(p.name for p in save_dir.glob("id_*.json")) == ["id_0.json", "id_1.json"]
    metrics = json.loads((exp / "runs/scores/.shoal-result.json").read_text())["metrics"]
    assert metrics["n_checkpoints"] == 2
    assert metrics["top1_same_label"] > 0.5  # the attributions make sense (chance ~0.1)
    assert plan(exp)["run"] == 0

    # retrained: featurize and the gather rerun in the same save_dir (b), and from scratch (c)
    b, c = run_side_by_side([exp, copy_example(tmp_path / "c")], "epochs=7", "--yes")
    assert np.allclose(b, c, rtol=1e-4, atol=1e-5), float(np.abs(b - c).max())
    assert not np.allclose(a, b, rtol=1e-2, atol=1e-2), "retraining changed nothing"

    # A checkpoint's TRAK state deleted by hand: its featurize task (and the gather) rerun;
    # shoal removes the rest of what the task owns (id_1.json) first, so TRAK redoes it.
    shutil.rmtree(save_dir / "1")
    steps = plan(exp, "epochs=7")["steps"]
    assert steps["train"]["run"] == 0
    assert steps["featurize"]["run"] == 1 and steps["featurize"]["reasons"]["missing"] == 1
    assert steps["scores"]["run"] == 1
    d = run(exp, "epochs=7")
    assert (save_dir / "1" / "features.mmap").exists()
    assert np.allclose(d, b, rtol=1e-4, atol=1e-5), float(np.abs(d - b).max())
