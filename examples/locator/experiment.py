"""Where is a sample from? locator trained once per holdout test set, as a shoal experiment.

The Slurm array job of the seed (``#SBATCH --array=0-4``, ``FILE_LIST[$SLURM_ARRAY_TASK_ID]``)
trains locator once per test set — each a different random 10 % of the individuals whose
origin is replaced by NA — and leaves the error analysis "outside the scope". Here the
whole chain is one experiment (see README.md)::

    simulate (1 task)  → holdout (per test set) → locate (per test set, the array job,
    ``locator_nn.py`` unchanged) → errors (1 task: every held-out sample's error in km)
                                 → by_test_set (per test set: that set's error stats)

The genotypes are synthetic (``simulate.py``: isolation by distance on a 1000 × 600 km
landscape), so the true origins are known and the error is a distance in km. The baseline
is the error of predicting, for every held-out sample, the mean location of the samples
with a known origin.

Settings: ``--config test_sets=5 samples=400 snps=300 seed=0 epochs=200``. This file only
declares the steps: numpy, pandas and torch are imported inside them (or by the command),
so ``shoal plan`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import shoal

if TYPE_CHECKING:
    import pandas as pd

N_SETS = shoal.config("test_sets", 5)  # the seed: --array=0-4
N_SAMPLES = shoal.config("samples", 400)
N_SNPS = shoal.config("snps", 300)
SEED = shoal.config("seed", 0)  # of the landscape, the genotypes and the holdout draws
EPOCHS = shoal.config("epochs", 200)  # locator_nn.py --epochs (it stops early)
TEST_FRACTION = 0.1

HERE = Path(__file__).resolve().parent

exp = shoal.Experiment("locator", grid=shoal.Grid(test_set=range(N_SETS)))


# ---------------------------------------------------------------- data: the landscape
@exp.step(
    per=[], version=f"n={N_SAMPLES},snps={N_SNPS},seed={SEED},code={shoal.hash_code('simulate.py')}"
)
def simulate(ctx: shoal.TaskContext) -> dict[str, Any]:
    """Simulate the landscape and genotypes: genotypes.txt (the matrix) and truth.tsv."""
    import simulate as sim

    ids, coords, genotypes = sim.simulate_landscape(N_SAMPLES, N_SNPS, seed=SEED)
    sim.write_genotype_matrix(ctx.out / "genotypes.txt", ids, genotypes)
    sim.write_locations(ctx.out / "truth.tsv", ids, coords)
    return {
        "n_samples": len(ids),
        "n_snps": int(genotypes.shape[1]),
        "heterozygosity": float((genotypes == 1).mean()),
    }


@exp.step(
    per=["test_set"],
    needs=[simulate],
    version=f"fraction={TEST_FRACTION},seed={SEED},code={shoal.hash_code('simulate.py')}",
)
def holdout(ctx: shoal.TaskContext, test_set: int) -> dict[str, Any]:
    """Write sample_data.tsv: the true locations, with 10 % of them (this test set's
    random draw) replaced by NA — the seed's ``data/potr_m_pred{test_set}.txt``."""
    import simulate as sim

    ids, coords = sim.read_locations(ctx.input(simulate).out / "truth.tsv")
    hide = sim.holdout_mask(len(ids), test_set, fraction=TEST_FRACTION, seed=SEED)
    sim.write_locations(ctx.out / "sample_data.tsv", ids, coords, hide)
    return {"n_known": int((~hide).sum()), "n_test": int(hide.sum())}


# ---------------------------------------------------------------- the array job
# One task per test set, the stand-alone script unchanged; {simulate} and {holdout} are the
# upstream tasks' folders, {out} this task's. The script is an input (editing it reruns the
# step), the epochs a var (--config epochs=... reruns it too), and the metrics come from
# what the script prints ("200 epochs, best epoch 61: val loss 0.1234, ...").
locate = exp.command(
    "locate",
    "{python} {script} --matrix {simulate}/genotypes.txt"
    " --sample_data {holdout}/sample_data.tsv --out {out}/pred --epochs {epochs}",
    per=["test_set"],
    needs=[simulate, holdout],
    cpus=1,
    mem="1G",
    time="10m",
    inputs={"script": "locator_nn.py"},
    vars={"epochs": EPOCHS},
    metrics={"epochs_run": r"^(\d+) epochs, best epoch", "val_loss": r"val loss ([0-9.]+)"},
)


# ---------------------------------------------------------------- the error analysis
def prediction_errors(runs: pd.DataFrame, truth_path: Path) -> pd.DataFrame:
    """Join each locate task's predictions (``<out>/pred_predlocs.txt``) with the truth.

    One row per held-out sample: ``test_set, sampleID, error_km`` (distance from the true
    origin), the predicted and true coordinates, and ``baseline_error_km``: the distance
    from the mean location of that test set's known samples.
    """
    import numpy as np
    import pandas as pd

    truth = pd.read_csv(truth_path, sep="\t", dtype={"sampleID": str})
    parts = []
    for row in runs.sort_values("test_set").itertuples():
        pred = pd.read_csv(Path(row.out) / "pred_predlocs.txt", dtype={"sampleID": str})
        known = truth[~truth["sampleID"].isin(pred["sampleID"])]
        centre = known[["x", "y"]].mean()
        t = pred.merge(truth, on="sampleID", suffixes=("_pred", "_true"), validate="1:1")
        if len(t) != len(pred):
            raise ValueError(f"test set {row.test_set}: predicted samples missing from truth")
        parts.append(
            pd.DataFrame(
                {
                    "test_set": row.test_set,
                    "sampleID": t["sampleID"],
                    "error_km": np.hypot(t["x_pred"] - t["x_true"], t["y_pred"] - t["y_true"]),
                    "x_pred": t["x_pred"],
                    "y_pred": t["y_pred"],
                    "x_true": t["x_true"],
                    "y_true": t["y_true"],
                    "baseline_error_km": np.hypot(
                        t["x_true"] - centre["x"], t["y_true"] - centre["y"]
                    ),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def error_stats(table: pd.DataFrame) -> dict[str, Any]:
    """Median and mean error and baseline error (km) of a table from prediction_errors."""
    return {
        "median_error_km": float(table["error_km"].median()),
        "mean_error_km": float(table["error_km"].mean()),
        "p90_error_km": float(table["error_km"].quantile(0.9)),
        "baseline_median_error_km": float(table["baseline_error_km"].median()),
        "baseline_mean_error_km": float(table["baseline_error_km"].mean()),
        "n_samples": len(table),
    }


SCORE_VERSION = shoal.hash_code(prediction_errors, error_stats)


@exp.gather(per=[], over=locate, needs=[simulate], version=SCORE_VERSION)
def errors(ctx: shoal.TaskContext, runs: pd.DataFrame) -> dict[str, Any]:
    """Every held-out sample of every test set: errors.csv, and the overall error stats."""
    table = prediction_errors(runs, ctx.input(simulate).out / "truth.tsv")
    table.to_csv(ctx.out / "errors.csv", index=False, float_format="%.3f")
    per_set = table.groupby("test_set")["error_km"].median()
    ctx.log.info("median error per test set (km): %s", per_set.round(1).to_dict())
    return {
        **error_stats(table),
        "n_test_sets": int(table["test_set"].nunique()),
        "worst_test_set_median_km": float(per_set.max()),
        "best_test_set_median_km": float(per_set.min()),
    }


@exp.gather(per=["test_set"], over=locate, needs=[simulate], version=SCORE_VERSION)
def by_test_set(ctx: shoal.TaskContext, test_set: int, runs: pd.DataFrame) -> dict[str, Any]:
    """One test set's held-out samples: errors.csv and its error stats."""
    table = prediction_errors(runs, ctx.input(simulate).out / "truth.tsv")
    table.to_csv(ctx.out / "errors.csv", index=False, float_format="%.3f")
    return error_stats(table)
