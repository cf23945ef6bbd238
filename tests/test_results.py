"""Results tables, summaries (against a hand computation), gathers, allow_missing, report."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from shoal.results.stats import t_ppf
from test_run import run

GRID = """
import os
FAIL = os.environ.get("FAIL_SEED")
exp = shoal.Experiment("res", grid=shoal.Grid(factor=[0, 10], seed=range(4), name=["x"]))

@exp.step(per=["factor", "seed", "name"])
def train(ctx, factor, seed, name):
    if FAIL is not None and seed == int(FAIL) and factor == 10:
        raise RuntimeError("planned failure")
    return {"rmse": factor + seed * 0.5, "ok": True, "label": f"s{seed}"}

@exp.gather(per=["factor"], over=train, allow_missing=True)
def by_factor(ctx, factor, runs):
    return {"n": len(runs), "mean": float(runs.rmse.mean())}

@exp.gather(per=[], over=train)
def strict(ctx, runs):
    return {"n": len(runs)}
"""


def test_results_table_columns_and_dtypes(write_exp, load) -> None:
    path = write_exp(GRID)
    run(path, check=True)
    exp = load(path)
    frame = exp.results("train")
    assert list(frame.columns[:3]) == ["factor", "seed", "name"]
    for col in ("status", "attempts", "duration", "started", "ended", "host", "out", "rmse",
                "ok", "label"):
        assert col in frame.columns
    assert len(frame) == 8
    assert str(frame["factor"].dtype) == "int64" and str(frame["seed"].dtype) == "int64"
    assert str(frame["rmse"].dtype) == "float64"
    assert str(frame["attempts"].dtype) == "Int64"
    assert str(frame["started"].dtype).startswith("datetime64")
    assert set(frame["status"]) == {"done"}
    assert frame.loc[(frame.factor == 10) & (frame.seed == 3), "rmse"].item() == 11.5
    assert Path(frame["out"][0]).is_dir()


def test_summary_matches_a_hand_computation(write_exp, load) -> None:
    path = write_exp(GRID)
    run(path, check=True)
    exp = load(path)
    s = exp.summary("train", by="factor", metric="rmse")
    row = s[s.factor == 10].iloc[0]
    vals = [10.0, 10.5, 11.0, 11.5]
    n = 4
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    sem = std / math.sqrt(n)
    half = 3.182446305284263 * sem  # t(0.975, 3) from a table
    assert row["n"] == 4 and row["mean"] == pytest.approx(mean)
    assert row["std"] == pytest.approx(std) and row["sem"] == pytest.approx(sem)
    assert row["ci_low"] == pytest.approx(mean - half, rel=1e-9)
    assert row["ci_high"] == pytest.approx(mean + half, rel=1e-9)
    assert (row["median"], row["min"], row["max"]) == (10.75, 10.0, 11.5)
    assert (row["missing"], row["failed"]) == (0, 0)


def test_t_quantiles_against_tables() -> None:
    table = {1: 12.7062047, 2: 4.30265273, 3: 3.18244631, 10: 2.22813885, 30: 2.04227246}
    for df, want in table.items():
        assert t_ppf(0.975, df) == pytest.approx(want, abs=1e-6)
    assert t_ppf(0.95, 5) == pytest.approx(2.01504837, abs=1e-6)
    assert t_ppf(0.025, 5) == pytest.approx(-2.57058184, abs=1e-6)


def test_failed_and_missing_are_counted_not_averaged(cli, write_exp, load, tmp_path) -> None:
    path = write_exp(GRID)
    env = {**os.environ, "FAIL_SEED": "2"}
    res = run(path, env=env)
    assert res.returncode == 1
    shutil.rmtree(tmp_path / "runs/train/factor=0/seed=1")  # a hole: missing
    exp = load(path)
    s = exp.summary("train", by=["factor"], metric=["rmse"])
    f0, f10 = s[s.factor == 0].iloc[0], s[s.factor == 10].iloc[0]
    assert (f0["n"], f0["missing"], f0["failed"]) == (3, 1, 0)
    assert (f10["n"], f10["missing"], f10["failed"]) == (3, 0, 1)
    assert f10["mean"] == pytest.approx((10 + 10.5 + 11.5) / 3)
    frame = exp.results("train")
    assert frame["status"].value_counts()["failed"] == 1
    rc, out, _ = cli("results", path, "--step", "train", "--by", "factor", "--format", "json")
    assert rc == 0
    doc = json.loads(out)
    assert {(d["factor"], d["metric"], d["failed"]) for d in doc} >= {(10, "rmse", 1)}


def test_allow_missing_gather_runs_on_what_succeeded(write_exp, tmp_path) -> None:
    path = write_exp(GRID)
    res = run(path, env={**os.environ, "FAIL_SEED": "2"})
    assert res.returncode == 1
    by10 = json.loads((tmp_path / "runs/by_factor/factor=10/.shoal-result.json").read_text())
    assert by10["metrics"]["n"] == 3  # ran on the three that succeeded
    assert not (tmp_path / "runs/strict/.shoal-result.json").exists()  # waits: no allow_missing
    err = json.loads(Path(tmp_path / "runs/train/factor=10/seed=2/name=x/.shoal-error.json")
                     .read_text())
    assert "planned failure" in err["error"]
    # the failure is fixed: the next run reruns it, and both gathers (upstream changed)
    res = run(path, check=True)
    by10 = json.loads((tmp_path / "runs/by_factor/factor=10/.shoal-result.json").read_text())
    assert by10["metrics"]["n"] == 4
    strict = json.loads((tmp_path / "runs/strict/.shoal-result.json").read_text())
    assert strict["metrics"]["n"] == 8


def test_gather_reruns_when_an_upstream_result_changes(cli, write_exp, tmp_path) -> None:
    path = write_exp(GRID)
    run(path, check=True)
    shutil.rmtree(tmp_path / "runs/train/factor=0/seed=3")
    _, out, _ = cli("plan", path, "--json")
    doc = json.loads(out)
    assert doc["steps"]["train"]["run"] == 1
    assert doc["steps"]["by_factor"]["run"] == 1  # only factor=0's gather
    assert doc["steps"]["strict"]["run"] == 1


def test_results_cli_formats_and_parquet_roundtrip(cli, write_exp, tmp_path) -> None:
    pytest.importorskip("pyarrow")
    path = write_exp(GRID)
    run(path, check=True)
    rc, out, _ = cli("results", path, "--step", "train")
    assert rc == 0 and "rmse" in out and "status" in out
    rc, out, _ = cli("results", path, "--step", "train", "--format", "csv")
    frame = pd.read_csv(__import__("io").StringIO(out))
    assert len(frame) == 8
    pq = tmp_path / "t.parquet"
    rc, _, _ = cli("results", path, "--step", "train", "--format", "parquet", "-o", pq)
    assert rc == 0
    back = pd.read_parquet(pq)
    assert len(back) == 8 and back["rmse"].sum() == pytest.approx(frame["rmse"].sum())
    assert str(back["seed"].dtype) == "int64"
    rc, _, err = cli("results", path, "--by", "seeed")
    assert rc == 2 and "no dimension 'seeed'" in err
    rc, _, err = cli("results", path, "--metric", "rsme")
    assert rc == 2 and "no metric 'rsme'" in err


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_loads_in_headless_chromium(cli, write_exp, tmp_path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("SHOAL_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (SHOAL_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    path = write_exp(GRID + """
exp.question("train", metric="rmse", x="factor", replicates="seed", baseline=0,
             higher_is_better=False)
exp.metric("rmse", label="RMSE of flow", unit="m³/s")
""")
    run(path, env={**os.environ, "FAIL_SEED": "1"})
    out = tmp_path / "report.html"
    rc, _, err = cli("report", path, "-o", out)
    assert rc == 0, err
    page = out.read_text()
    assert "planned failure" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(["']?https?:""", page)
    assert page.index("id='s-headline'") < page.index("id='s-tasks'")  # the answer first
    assert "factor 10 worsens RMSE of flow by" in page and "RMSE of flow [m³/s]" in page
    assert "by seed" not in page  # (per-seed plots: only with --all)
    assert "<svg class=\"fig\"" in page and "<title>factor=10:" in page  # hover values
    res = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=5000",
         "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    images = page.count("<img ") + page.count("<svg class=\"fig\"")
    assert images >= 2
    assert f'data-images-ok="{images}/{images}"' in res.stdout
    links = page.count("<li><a href='#")
    assert links >= 6 and f'data-toc-ok="{links}/{links}"' in res.stdout


def test_json_export_round_trips_floats_exactly(cli, write_exp, tmp_path) -> None:
    """pandas' to_json kept 10 significant digits: 1e-12 was exported as 0.0."""
    import json as _json

    from test_run import run

    path = write_exp("""
        exp = shoal.Experiment("j", grid=shoal.Grid(k=[0]))

        @exp.step(per=["k"])
        def t(ctx, k):
            return {"tiny": 1e-12, "exact": 0.1 + 0.2, "big": 123456789.12345679, "n": 7}
    """)
    run(path, check=True)
    rc, out, err = cli("results", path, "--format", "json")
    assert rc == 0, err
    row = _json.loads(out)[0]
    assert row["tiny"] == 1e-12 and row["exact"] == 0.1 + 0.2
    assert row["big"] == 123456789.12345679 and row["n"] == 7 and row["k"] == 0
    assert row["status"] == "done" and row["started"].endswith("+00:00")
