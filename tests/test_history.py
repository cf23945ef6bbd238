"""ctx.log(epoch=..., ...): a task's history, kept across a resumed task's attempts, dropped
when the task's definition changes; read back as one table and as learning-curve bands."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest

from shoal.results.history import bands
from shoal.results.stats import mean_ci
from test_run import run

CURVES = """
import os
STOP_AT = int(os.environ.get("STOP_AT", "0"))
exp = shoal.Experiment("h", grid=shoal.Grid(lr=[1, 2], seed=range(3)))

@exp.step(per=["lr", "seed"], version=os.environ.get("VERSION", "1"))
def train(ctx, lr, seed):
    ckpt = ctx.checkpoint.load() or {"epoch": 0}
    for epoch in range(ckpt["epoch"] + 1, 6):
        ctx.log(epoch=epoch, loss=1.0 / (lr * epoch) + seed * 0.01, note="text")
        if epoch == STOP_AT and ctx.attempt == 1:
            ctx.checkpoint.save({"epoch": epoch})
            return shoal.Requeue
    ctx.log.info("trained lr=%s", lr)
    return {"final": 1.0 / (lr * 5)}
"""


def test_histories_read_back_as_one_table(write_exp, load) -> None:
    path = write_exp(CURVES)
    run(path, check=True)
    hist = load(path).history("train")
    assert hist.attrs["x"] == "epoch"
    assert len(hist) == 6 * 5
    assert list(hist.columns[:2]) == ["lr", "seed"]
    row = hist[(hist.lr == 2) & (hist.seed == 1) & (hist.epoch == 4)]
    assert row["loss"].item() == pytest.approx(1 / 8 + 0.01)
    assert load(path).history()["epoch"].max() == 5  # (default: the step that has them)
    log = (path.parent / "runs/train/lr=1/seed=0/.shoal.log").read_text()
    assert "trained lr=1" in log  # ctx.log is still the task's logger


def test_a_resumed_task_continues_its_history(write_exp, load) -> None:
    path = write_exp(CURVES)
    run(path, check=True, env={**os.environ, "STOP_AT": "3"})  # (requeued, resumed)
    assert "shoal.Requeue" in (path.parent / "runs/train/lr=1/seed=0/.shoal.log").read_text()
    hist = load(path).history("train")
    task = hist[(hist.lr == 1) & (hist.seed == 0)]
    assert list(task["epoch"]) == [1, 2, 3, 4, 5]


def test_a_changed_task_starts_a_new_history(write_exp, load, monkeypatch) -> None:
    path = write_exp(CURVES.replace("range(ckpt[\"epoch\"] + 1, 6)",
                                    "range(ckpt[\"epoch\"] + 1, int(os.environ.get('N', 6)))"))
    run(path, check=True, env={**os.environ, "N": "9"})
    assert load(path).history("train")["epoch"].max() == 8
    monkeypatch.setenv("VERSION", "2")  # (this process plans with the new version too)
    run(path, check=True, env={**os.environ, "N": "4"})
    hist = load(path).history("train")
    assert hist["epoch"].max() == 3 and len(hist) == 6 * 3


def test_log_takes_torch_scalars_without_warnings_and_refuses_lists(write_exp, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    del torch
    path = write_exp("""
        import torch
        exp = shoal.Experiment("t", grid=shoal.Grid(k=["ok", "bad"]))

        @exp.step(per=["k"])
        def s(ctx, k):
            w = torch.ones(1, requires_grad=True)
            loss = (w * 3).sum()
            ctx.log(epoch=1, loss=loss, n=torch.tensor(4))
            if k == "bad":
                ctx.log(epoch=2, loss=[1, 2])
            return {}
    """)
    res = run(path)
    assert res.returncode == 1
    text = (tmp_path / "runs/s/k=ok/.shoal-history.jsonl").read_text().splitlines()
    assert text[1] == '{"epoch": 1, "loss": 3.0, "n": 4}'
    err = (tmp_path / "runs/s/k=bad/.shoal.log").read_text()
    assert "ctx.log(loss=...) takes a number or a text, got list" in err
    quiet = tmp_path / "runs/s/k=ok/.shoal.log"  # (a warning would be in the task's log)
    assert not quiet.exists() or "Warning" not in quiet.read_text()


def test_a_command_step_writes_its_history_through_shoal_history(write_exp, load) -> None:
    path = write_exp("""
        exp = shoal.Experiment("c", grid=shoal.Grid(k=[1, 2]))
        exp.command("fit", 'for e in 1 2 3; do echo "{{\\\\"step\\\\": $e, '
                    '\\\\"acc\\\\": 0.{k}$e}}" >> "$SHOAL_HISTORY"; done', per=["k"])
    """)
    run(path, check=True)
    hist = load(path).history("fit")
    assert hist.attrs["x"] == "step"
    assert list(hist[hist.k == 2]["acc"]) == [0.21, 0.22, 0.23]


def test_bands_average_replicates_within_blocks_first() -> None:
    rows = []
    for site, base in (("a", 1.0), ("b", 2.0), ("c", 4.0)):
        for seed in (0, 1):
            for epoch in (1, 2):
                rows.append({"f": 0, "site": site, "seed": seed, "_task": f"{site}{seed}",
                             "epoch": epoch, "loss": base / epoch + seed})
    hist = pd.DataFrame(rows)
    hist.attrs["x"] = "epoch"
    got = bands(hist, "loss", "f", ["site"]).set_index("epoch")
    site_means = [b / 2 + 0.5 for b in (1.0, 2.0, 4.0)]  # epoch 2, seeds averaged
    n, mean, lo, hi = mean_ci(site_means)
    assert got.loc[2, "n"] == n == 3 and got.loc[2, "mean"] == pytest.approx(mean)
    assert (got.loc[2, "low"], got.loc[2, "high"]) == pytest.approx((lo, hi))
    one = bands(hist[hist.site == "a"], "loss", None, ["site"])
    assert math.isnan(one["low"].iloc[0])  # one block: no interval


def test_values_logged_in_separate_calls_merge_and_names_like_dimensions_are_kept() -> None:
    """Review: two calls at one epoch (loss, then val) kept only the second record; a logged
    name that is also a dimension (lr) crashed the report and the export."""
    import json
    import tempfile
    from pathlib import Path

    from shoal.results.history import read_histories

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "t"
        out.mkdir()
        lines = [{"_fingerprint": "f"}]
        for e in (1, 2):
            lines += [{"epoch": e, "loss": 1.0 / e, "lr": 0.1 / e}, {"epoch": e, "val": e * 2}]
            lines += [{"step": 10 * e + k, "epoch": e, "batch_loss": k} for k in range(3)]
        lines.append({"test_acc": 0.9})  # (no x: not on a curve)
        (out / ".shoal-history.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
        frame = pd.DataFrame({"lr": [1], "status": ["done"], "out": [str(out)]})
        hist = read_histories(frame, ["lr"])
    from shoal.results.history import points, x_of

    assert hist.attrs["x"] == "step"  # (the finest key)
    assert set(hist.columns) >= {"lr", "log_lr", "loss", "val", "batch_loss"}
    assert len(hist) == 6 + 2 + 1  # 6 steps, 2 epochs (loss and val merged), test_acc
    assert x_of(hist, "batch_loss") == "step" and x_of(hist, "loss") == "epoch"
    got = points(hist.drop(columns=["lr", "_task"]))
    assert got["loss"] == [(1, 1.0), (2, 0.5)] and got["val"] == [(1, 2.0), (2, 4.0)]
    assert got["batch_loss"][:2] == [(10, 0.0), (11, 1.0)] and "test_acc" not in got


def test_epoch_level_values_logged_in_two_calls_are_one_row(tmp_path) -> None:
    import json

    from shoal.results.history import curve_metrics, read_histories

    out = tmp_path / "t"
    out.mkdir()
    lines = [{"_fingerprint": "f"}]
    for e in (1, 2, 3):
        lines += [{"epoch": e, "loss": 1.0 / e}, {"epoch": e, "val": e * 2.0}]
    (out / ".shoal-history.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    frame = pd.DataFrame({"k": [1], "status": ["done"], "out": [str(out)]})
    hist = read_histories(frame, ["k"])
    assert list(hist["epoch"]) == [1, 2, 3]
    assert list(hist["loss"]) == pytest.approx([1.0, 0.5, 1 / 3])
    assert list(hist["val"]) == [2.0, 4.0, 6.0]
    assert curve_metrics(hist, ["k"]) == ["loss", "val"]
