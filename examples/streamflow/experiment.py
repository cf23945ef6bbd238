"""Multi-task LSTMs for streamflow: the "27,270 model runs" experiment as a shoal experiment.

One LSTM per river site learns daily streamflow and, weighted by a multi-task ``factor``,
water temperature (loss = mse(flow) + factor × mse(temp)); every site × factor × seed is
trained and evaluated, then everything is gathered into one table. This is the workflow of
Sadler et al. (2022) that was run with a Snakefile (prep_io_data → train_model →
make_predictions / evaluate_predictions → combine_metrics); see README.md.

The default grid is small (3 sites × 3 factors × 3 seeds, about a minute of CPU). The
paper's grid::

    shoal run examples/streamflow --config sites=101 \\
        factors='[0,1,5,10,20,40,80,160,320]' seeds=30

This file only declares the grid and the steps: torch and ``model.py`` are imported inside
the step bodies, so ``shoal plan`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import shoal

if TYPE_CHECKING:
    import pandas as pd

N_SITES = shoal.config("sites", 3)  # paper: 101
FACTORS = shoal.config("factors", [0, 1, 10])  # paper: [0, 1, 5, 10, 20, 40, 80, 160, 320]
N_SEEDS = shoal.config("seeds", 3)  # paper: 30
# Model and data sizes (the defaults of model.py; one training takes about 2 s of one core).
EPOCHS = shoal.config("epochs", 80)
DAYS = shoal.config("days", 5475)
HIDDEN = shoal.config("hidden", 16)
# --config pack=1: train the (factor, seed) models of a site together, PACK_SIZE at a time,
# as one stacked model (shoal packs + shoal.torch); the same results per task.
PACK = shoal.config("pack", False)
PACK_SIZE = shoal.config("pack_size", 30)
SEQ_LEN = 120
VAL_FRACTION = 0.3

# NWIS-like 8-digit station ids: 01022500, 01023500, ...
SITES = [f"{1022500 + 1000 * i:08d}" for i in range(N_SITES)]

exp = shoal.Experiment(
    "streamflow", grid=shoal.Grid(site=SITES, factor=FACTORS, seed=range(N_SEEDS))
)

# Sizes that are not grid dimensions go into each step's version, so that changing them
# (--config epochs=200) makes the affected tasks out of date.
PREP_VERSION = f"days={DAYS},seq_len={SEQ_LEN},val={VAL_FRACTION}"
TRAIN_VERSION = f"epochs={EPOCHS},hidden={HIDDEN}"


@exp.step(per=["site"], version=PREP_VERSION)
def prep(ctx, site: str) -> dict[str, Any]:
    """Simulate the site's forcing and targets; write normalised sequences to prepped.npz."""
    import numpy as np
    from model import prep_arrays, simulate

    data = simulate(site, n_days=DAYS)
    arrays = prep_arrays(data, seq_len=SEQ_LEN, val_fraction=VAL_FRACTION)
    np.savez(ctx.out / "prepped.npz", **arrays)
    return {
        "n_train_seqs": len(arrays["x_train"]),
        "n_val_seqs": len(arrays["x_val"]),
        "mean_flow": float(data["flow"].mean()),
        "mean_temp": float(data["temp"].mean()),
    }


def _train_one(ctx, site: str, factor: float, seed: int) -> dict[str, Any]:
    """Train one LSTM with loss mse(flow) + factor × mse(temp); save model.pt."""
    from model import load_arrays, save_model, train_model, write_history

    arrays = load_arrays(ctx.input(prep).out / "prepped.npz")
    ctx.log.info("training site=%s factor=%s seed=%s on %s", site, factor, seed, ctx.device)
    model, history = train_model(
        arrays,
        factor=factor,
        seed=seed,
        epochs=EPOCHS,
        hidden=HIDDEN,
        threads=ctx.threads,
        should_stop=ctx.should_stop,
        device=ctx.device,
        log=ctx.log.info,
        on_epoch=lambda r: _log_epoch(ctx, r),  # learning curves in `shoal report`
    )
    write_history(history, ctx.out / "history.csv")
    last = history[-1]
    if last["stopped"]:
        # Asked to stop (Ctrl-C, preemption): a half-trained model must not count as done.
        # Requeue: recorded interrupted, not failed; the next run trains it again.
        ctx.log.info("stopped after %d of %d epochs; requeued", len(history), EPOCHS)
        return shoal.Requeue
    save_model(model, ctx.out / "model.pt")
    return _train_metrics(history)


def _log_epoch(ctx, record: dict[str, Any]) -> None:
    ctx.log(epoch=record["epoch"], loss=record["loss"], loss_flow=record["loss_flow"],
            loss_temp=record["loss_temp"])


def _train_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    last = history[-1]
    return {
        "epochs_run": len(history),
        "final_loss": last["loss"],
        "final_loss_flow": last["loss_flow"],
        "final_loss_temp": last["loss_temp"],
        "train_seconds": last["seconds"],
    }


def _train_pack(pack, site: str, factor: list[float], seed: list[int]) -> Any:
    """Train the pack's (factor, seed) models of one site as one stacked model; each member
    gets its own model.pt, history.csv and metrics, as if trained alone."""
    from model import load_arrays, save_model, write_history
    from packed import train_packed

    first = pack.members[0]
    arrays = load_arrays(first.input(prep).out / "prepped.npz")
    pack.log.info("training %d models of site=%s on %s", len(pack), site, pack.device)
    models, histories = train_packed(
        arrays, factors=factor, seeds=seed, epochs=EPOCHS, hidden=HIDDEN,
        threads=pack.threads, should_stop=pack.should_stop, device=pack.device,
        log=pack.log.info,
    )
    if histories[0][-1]["stopped"]:
        pack.log.info("stopped after %d of %d epochs; requeued", len(histories[0]), EPOCHS)
        return shoal.Requeue  # (every member: interrupted, trained again next run)
    results = []
    for member, model, history in zip(pack.members, models, histories):
        for record in history:
            _log_epoch(member, record)
        write_history(history, member.out / "history.csv")
        save_model(model, member.out / "model.pt")
        results.append(_train_metrics(history))
    return results


# threads per training (`shoal tune examples/streamflow train` says which fills the machine
# best; --config train_cpus=N sets it)
_TRAIN = dict(per=["site", "factor", "seed"], needs=[prep], cpus=shoal.config("train_cpus", 1),
              mem="1G", time="20m", version=TRAIN_VERSION)
if PACK:
    train = exp.step(**_TRAIN, name="train", pack=["factor", "seed"],
                     pack_size=PACK_SIZE)(_train_pack)
else:
    train = exp.step(**_TRAIN, name="train")(_train_one)


@exp.step(per=["site", "factor", "seed"], needs=[train, prep])
def evaluate(ctx, site: str, factor: float, seed: int) -> dict[str, Any]:
    """RMSE and NSE of flow and temperature on the validation (and training) period."""
    from model import evaluate_model, load_arrays, load_model, save_predictions, set_threads

    set_threads(ctx.threads)
    arrays = load_arrays(ctx.input(prep).out / "prepped.npz")
    model = load_model(ctx.input(train).out / "model.pt", device=ctx.device)
    save_predictions(model, arrays, ctx.out / "val_preds.csv", part="val")
    return evaluate_model(model, arrays)


# The question the experiment asks: does multi-tasking help? `shoal report` opens with the
# answer (each factor against factor 0, paired on site and seed; seeds averaged per site).
exp.question(evaluate, metric="val_nse_flow", x="factor", replicates="seed",
             baseline=0 if 0 in FACTORS else None)
exp.metric("val_nse_flow", label="NSE of flow, validation period", higher_is_better=True)
exp.metric("val_nse_temp", label="NSE of water temperature, validation period",
           higher_is_better=True)
exp.metric("val_rmse_flow", label="RMSE of flow, validation period", unit="m³/s",
           higher_is_better=False)
exp.metric("val_rmse_temp", label="RMSE of water temperature, validation period", unit="°C",
           higher_is_better=False)
exp.metric("loss", label="training loss (normalised units)", higher_is_better=False)


@exp.gather(per=[], over=evaluate)
def combine(ctx, runs: pd.DataFrame) -> dict[str, Any]:
    """One table of all runs (overall_metrics.csv) and a summary per factor (by_factor.csv).

    ``by_factor.csv`` has, per factor, the number of runs and the mean and standard
    deviation across sites × seeds of the validation RMSE and NSE of flow and temperature,
    and of ``val_rmse_flow_rel``: the run's flow RMSE divided by that of the factor-0 run
    of the same site and seed (< 1: multi-tasking helped; only when factor 0 is in the
    grid). RMSE is in physical units, so its plain mean weighs large rivers more; NSE and
    the relative RMSE are comparable across sites. The best factor is the one with the
    highest mean validation NSE of flow.
    """
    metrics = ["val_rmse_flow", "val_nse_flow", "val_rmse_temp", "val_nse_temp"]
    table = runs.sort_values(["site", "factor", "seed"]).reset_index(drop=True)
    baseline = table[table["factor"] == 0].set_index(["site", "seed"])["val_rmse_flow"]
    if len(baseline):
        keys = list(zip(table["site"], table["seed"]))
        table["val_rmse_flow_rel"] = (
            table["val_rmse_flow"].to_numpy() / baseline.reindex(keys).to_numpy()
        )
        metrics.append("val_rmse_flow_rel")
    table.to_csv(ctx.out / "overall_metrics.csv", index=False, float_format="%.6g")

    summary = table.groupby("factor")[metrics].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary.insert(0, "n_runs", table.groupby("factor").size())
    summary.reset_index().to_csv(ctx.out / "by_factor.csv", index=False, float_format="%.6g")

    nse_by_factor = summary["val_nse_flow_mean"].dropna()
    best = nse_by_factor.idxmax() if len(nse_by_factor) else None
    best = best.item() if hasattr(best, "item") else best  # numpy scalar -> JSON scalar
    result: dict[str, Any] = {
        "n_runs": len(table),
        "n_sites": int(table["site"].nunique()),
        "best_factor": best,
        "best_val_nse_flow": None if best is None else float(nse_by_factor[best]),
        "mean_val_nse_flow": float(table["val_nse_flow"].mean()),
        "mean_val_nse_temp": float(table["val_nse_temp"].mean()),
    }
    if 0 in summary.index:
        result["factor0_val_nse_flow"] = float(summary.loc[0, "val_nse_flow_mean"])
    return result
