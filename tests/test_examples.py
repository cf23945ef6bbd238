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
    # the headline: every factor against factor 0, paired on site and seed, seeds averaged
    res = shoal("results", exp, "--root", root, "--headline", "--format", "json")
    head = json.loads(res.stdout)[0]
    assert (head["metric"], head["x"], head["baseline"]) == ("val_nse_flow", "factor", 0)
    assert head["n_counts"] == "sites (each the mean of 3 seeds)"
    rows = {r["factor"]: r for r in head["rows"]}
    assert rows[1]["pairs"] == 3 and rows[0]["n"] == 3 and len(head["sentences"]) == 2
    res = shoal("report", exp, "--root", root, "-o", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert "over factor 0" in page or "from factor 0" in page
    assert "train: learning curves" in page  # (ctx.log(epoch=...) in the example)


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
    locate = json.loads((tmp_path / "runs/locate/test_set=0/.shoal-result.json").read_text())
    assert set(locate["metrics"]) == {"epochs_run", "val_loss"}  # from what the script printed
    assert locate["metrics"]["val_loss"] > 0 and locate["metrics"]["epochs_run"] > 1


def test_long_training_example_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    import signal
    import time

    exp = str(ROOT / "examples" / "long_training")
    root = tmp_path / "runs"
    args = ["--root", str(root), "--config", "epochs=4000", "seeds=1", "-j", "2"]
    proc = subprocess.Popen([*shoal_cmd(), "run", exp, *args, "--progress", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not all(list((root / f"train/width={w}/seed=0/.shoal-checkpoints").glob("ckpt-*"))
                      for w in (16, 64)):
            assert time.time() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "2 interrupted" in err, err
    res = shoal("run", exp, *args, "--progress", "none")
    assert res.returncode == 0, res.stderr[-3000:]
    for w in (16, 64):
        doc = json.loads((root / f"train/width={w}/seed=0/.shoal-result.json").read_text())
        assert 0 < doc["metrics"]["resumed_from"] < 4000 and doc["metrics"]["epochs"] == 4000
    assert "resuming from epoch" in shoal("logs", exp, "train", "width=16", "seed=0",
                                          *args[:4]).stdout


def test_streamflow_packed_variant_gives_the_same_results(tmp_path: Path) -> None:
    exp = str(ROOT / "examples" / "streamflow")
    small = ["--config", "sites=1", "factors=[0,5]", "seeds=3", "epochs=3", "days=900"]
    out = {}
    for name, extra in (("alone", []), ("packed", ["pack=1", "pack_size=4"])):
        root = str(tmp_path / name)
        res = shoal("run", exp, "--root", root, *small, *extra, "-j", "2", "--progress", "none")
        assert res.returncode == 0, res.stderr[-3000:]
        res = shoal("results", exp, "--root", root, *small, *extra, "--step", "evaluate",
                    "--format", "json")
        out[name] = {(r["factor"], r["seed"]): r for r in json.loads(res.stdout)}
    assert len(out["packed"]) == 6
    for key, row in out["alone"].items():
        assert out["packed"][key]["val_nse_flow"] == pytest.approx(row["val_nse_flow"],
                                                                   rel=1e-5)
    logs = list((tmp_path / "packed/train").rglob(".shoal.log"))
    assert len(logs) == 6 and all("pack of" in p.read_text() for p in logs)


def test_genomic_gcn_example_threads_and_ddp_agree(tmp_path: Path) -> None:
    """Seed 002's workload: the GCN per thread count (cpus="{n_threads}") and as a 2-rank
    DDP task over Gloo; DDP averages the gradients of two halves of the training set, so it
    follows the single-process training of the same seed."""
    exp = str(ROOT / "examples" / "genomic_gcn")
    root = tmp_path / "runs"
    res = shoal("run", exp, "--root", str(root), "-j", "2", "--progress", "none")
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((root / "compare/.shoal-result.json").read_text())["metrics"]
    assert set(m) == {"1_threads_test_r", "1_threads_train_s", "2_threads_test_r",
                      "2_threads_train_s", "ddp_x2_test_r", "ddp_x2_train_s"}
    assert m["1_threads_test_r"] > 0.2  # (the trait is heritable: the model finds it)
    assert abs(m["ddp_x2_test_r"] - m["1_threads_test_r"]) < 0.02
    one = json.loads((root / "threads/n_threads=2/seed=0/.shoal-result.json").read_text())
    assert one["metrics"]["test_rmse_days"] > 0


def test_tune_on_the_streamflow_train_step(tmp_path: Path) -> None:
    """`shoal tune` on the streamflow example's train step prints its table and a
    recommendation (figures printed, never asserted)."""
    exp = str(ROOT / "examples" / "streamflow")
    args = ["--root", str(tmp_path / "runs"), "--config", "sites=1", "seeds=2", "epochs=3",
            "days=400"]
    res = shoal("run", exp, *args, "--progress", "none")
    assert res.returncode == 0, res.stderr[-3000:]
    res = shoal("tune", exp, "train", *args, "--sample", "2", "--repeats", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stdout)
    assert res.stdout.startswith("threads  at once  tasks/h")
    assert "recommend: cpus=" in res.stdout and "on step 'train'" in res.stdout
