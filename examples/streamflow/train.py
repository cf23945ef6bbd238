"""Train and evaluate one streamflow LSTM, stand-alone: the way a Slurm array job does it.

Without shoal, each task of the experiment is one process, for example from an array job::

    #SBATCH --array=0-26
    python train.py --site "${SITES[$i]}" --factor "${FACTORS[$j]}" --seed "$k" \\
        --out "expA/site_id_${SITES[$i]}/factor_${FACTORS[$j]}/rand_seed_$k"

The script simulates and prepares its site's data itself (cheap, deterministic), trains
with loss mse(flow) + factor × mse(temp), and writes into ``--out``: ``model.pt``,
``history.csv``, ``val_preds.csv`` and ``metrics.json`` (the evaluation metrics plus the
run's parameters and timings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Keep BLAS/OpenMP to the requested threads before torch loads (set by default to 1).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from model import (  # noqa: E402  (after the thread settings above)
    DEFAULT_DAYS,
    DEFAULT_EPOCHS,
    DEFAULT_HIDDEN,
    DEFAULT_SEQ_LEN,
    DEFAULT_VAL_FRACTION,
    evaluate_model,
    prep_arrays,
    save_model,
    save_predictions,
    simulate,
    train_model,
    write_history,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--site", required=True, help="site id, e.g. 01022500")
    p.add_argument("--factor", type=float, required=True, help="multi-task weight of temp")
    p.add_argument("--seed", type=int, required=True, help="random seed of the weights")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days simulated")
    p.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN, help="LSTM hidden size")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Prep, train, evaluate; write model.pt, history.csv, val_preds.csv, metrics.json."""
    args = parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)

    data = simulate(args.site, n_days=args.days)
    arrays = prep_arrays(data, seq_len=DEFAULT_SEQ_LEN, val_fraction=DEFAULT_VAL_FRACTION)
    model, history = train_model(
        arrays,
        factor=args.factor,
        seed=args.seed,
        epochs=args.epochs,
        hidden=args.hidden,
        threads=args.threads,
        device=args.device,
    )
    save_model(model, args.out / "model.pt")
    write_history(history, args.out / "history.csv")
    save_predictions(model, arrays, args.out / "val_preds.csv", part="val")

    metrics = {
        "site": args.site,
        "factor": args.factor,
        "seed": args.seed,
        "epochs_run": len(history),
        "final_loss": history[-1]["loss"],
        **evaluate_model(model, arrays),
        "train_seconds": history[-1]["seconds"],
        "total_seconds": time.perf_counter() - started,
    }
    tmp = args.out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(args.out / "metrics.json")
    print(
        f"site={args.site} factor={args.factor:g} seed={args.seed}: "
        f"val NSE flow={metrics['val_nse_flow']:.3f} temp={metrics['val_nse_temp']:.3f} "
        f"({metrics['total_seconds']:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
