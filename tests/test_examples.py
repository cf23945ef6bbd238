"""Both examples, end to end through the CLI, at their default (small) size."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from test_run import shoal_cmd

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("torch")


def shoal(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*shoal_cmd(), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_streamflow_example(tmp_path: Path) -> None:
    exp = str(ROOT / "examples" / "streamflow")
    root = str(tmp_path / "runs")
    res = shoal("run", exp, "--root", root, "-j", "2", "--progress", "plain")
    assert res.returncode == 0, res.stderr[-3000:]
    res = shoal("results", exp, "--root", root, "--format", "json")
    rows = json.loads(res.stdout)
    assert len(rows) == 27 and all(r["status"] == "done" for r in rows)
    assert sum(r["val_nse_flow"] for r in rows) / len(rows) > 0.3  # the LSTMs learned
    res = shoal("results", exp, "--root", root, "--by", "factor", "--metric", "val_nse_temp",
                "--format", "json")
    by = {r["factor"]: r for r in json.loads(res.stdout)}
    assert set(by) == {0, 1, 10} and all(r["n"] == 9 for r in by.values())
    assert by[10]["mean"] > by[0]["mean"]  # multi-task training helps temperature
    combine = json.loads((tmp_path / "runs/combine/.shoal-result.json").read_text())
    assert combine["metrics"]["n_runs"] == 27
    assert shoal("plan", exp, "--root", root, "--json").stdout.count('"run": 0') >= 1


def test_locator_example(tmp_path: Path) -> None:
    exp = str(ROOT / "examples" / "locator")
    root = str(tmp_path / "runs")
    res = shoal("run", exp, "--root", root, "-j", "2", "--progress", "plain")
    assert res.returncode == 0, res.stderr[-3000:]
    errors = json.loads((tmp_path / "runs/errors/.shoal-result.json").read_text())["metrics"]
    assert errors["n_samples"] == 200
    assert errors["median_error_km"] < 0.6 * errors["baseline_median_error_km"]
    res = shoal("results", exp, "--root", root, "--step", "by_test_set", "--format", "json")
    rows = json.loads(res.stdout)
    assert sorted(r["test_set"] for r in rows) == [0, 1, 2, 3, 4]
