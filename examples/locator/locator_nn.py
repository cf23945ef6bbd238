"""Predict where samples come from, from their genotypes: a small locator, stand-alone.

A compact re-implementation of locator (Battey, Ralph & Kern 2020, eLife 9:e54507) in
torch, with locator's command line and files::

    python locator_nn.py --matrix data/genotypes.txt --sample_data data/sample_data0.tsv \\
        --out out/predictions0

- ``--matrix``: tab-separated genotype matrix, a header ``sampleID snp0 snp1 ...`` and one
  row per sample of allele counts 0/1/2;
- ``--sample_data``: tab-separated ``sampleID x y``; samples with ``x``/``y`` = ``NA`` are
  the ones to locate, the others train (90 %) and validate (10 %) the network.

The network maps standardised genotypes to standardised coordinates (an MLP, MSE loss,
Adam), stops early when the validation loss has not improved for ``--patience`` epochs and
keeps the best weights. It writes ``PREFIX_predlocs.txt`` (CSV ``sampleID,x,y``: the
predicted locations of the NA samples) and ``PREFIX_history.txt`` (CSV ``epoch,loss,
val_loss,val_median_error``). Threads: ``$OMP_NUM_THREADS`` if set. No shoal here: this is
the script the Slurm array job runs, one process per test set.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (locator's names where it has them)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--matrix", type=Path, required=True, help="genotype matrix (TSV)")
    p.add_argument("--sample_data", type=Path, required=True, help="sampleID x y (TSV, NA)")
    p.add_argument("--out", required=True, help="output prefix, e.g. out/predictions0")
    p.add_argument("--epochs", type=int, default=200, help="maximum epochs")
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument(
        "--train_split",
        type=float,
        default=0.9,
        help="fraction of the located samples that train; the rest validate",
    )
    p.add_argument("--width", type=int, default=128, help="units per hidden layer")
    p.add_argument("--nlayers", type=int, default=3, help="hidden layers")
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="split and weight initialisation")
    return p.parse_args(argv)


def load_data(matrix: Path, sample_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The genotypes (samples × SNPs, float), the sample ids and the locations (NaN = unknown),
    in the matrix's sample order."""
    gmat = pd.read_csv(matrix, sep="\t", dtype={"sampleID": str})
    samples = gmat.pop("sampleID").to_numpy()
    genotypes = gmat.to_numpy(dtype=np.float32)
    locs = pd.read_csv(sample_data, sep="\t", dtype={"sampleID": str}, na_values=["NA"])
    locs = locs.set_index("sampleID")
    missing = [s for s in samples if s not in locs.index]
    if missing:
        raise SystemExit(
            f"{len(missing)} samples of {matrix} are not in {sample_data}, e.g. {missing[0]}"
        )
    coords = locs.loc[samples, ["x", "y"]].to_numpy(dtype=np.float64)
    return genotypes, samples, coords


def build_model(n_snps: int, width: int, nlayers: int, dropout: float) -> nn.Module:
    """Batch-normalised input, ``nlayers`` ELU layers with dropout half-way, 2 outputs."""
    layers: list[nn.Module] = [nn.BatchNorm1d(n_snps)]
    size = n_snps
    for i in range(nlayers):
        layers += [nn.Linear(size, width), nn.ELU()]
        size = width
        if i == nlayers // 2 - 1:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(size, 2))
    return nn.Sequential(*layers)


def main(argv: Sequence[str] | None = None) -> int:
    """Train on the located samples, predict the NA ones, write predlocs and history."""
    args = parse_args(argv)
    started = time.perf_counter()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    genotypes, samples, coords = load_data(args.matrix, args.sample_data)
    known = ~np.isnan(coords).any(axis=1)
    keep = genotypes[known].std(axis=0) > 0  # drop SNPs without variation in training
    genotypes = genotypes[:, keep]
    order = rng.permutation(np.flatnonzero(known))
    n_train = max(1, round(args.train_split * len(order)))
    train_idx, val_idx = order[:n_train], order[n_train:]
    pred_idx = np.flatnonzero(~known)
    print(
        f"{len(samples)} samples, {genotypes.shape[1]} SNPs; {len(train_idx)} train, "
        f"{len(val_idx)} validate, {len(pred_idx)} to predict"
    )

    # Standardise coordinates with the training samples' mean and sd (locator's normalise).
    mean = coords[train_idx].mean(axis=0)
    sd = coords[train_idx].std(axis=0)
    sd[sd == 0] = 1.0
    x_all = torch.from_numpy(genotypes)
    y_all = torch.from_numpy(((np.nan_to_num(coords) - mean) / sd).astype(np.float32))

    model = build_model(genotypes.shape[1], args.width, args.nlayers, args.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    loss_fn = nn.MSELoss()
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    x_val, y_val = x_all[val_idx], y_all[val_idx]

    history: list[tuple[int, float, float, float]] = []
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(train_idx))
        total = 0.0
        for start in range(0, len(perm), args.batch_size):
            batch = perm[start : start + args.batch_size]
            if len(batch) < 2:  # batch norm needs two samples
                continue
            opt.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        train_loss = total / len(perm)
        model.eval()
        with torch.no_grad():
            if len(val_idx):
                pred = model(x_val)
                val_loss = float(loss_fn(pred, y_val))
                err = np.linalg.norm((pred.numpy() - y_val.numpy()) * sd, axis=1)
                val_median = float(np.median(err))
            else:
                val_loss, val_median = train_loss, float("nan")
        history.append((epoch, train_loss, val_loss, val_median))
        if val_loss < best_loss:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    model.load_state_dict(best_state)
    best = min(history, key=lambda h: h[2])

    model.eval()
    with torch.no_grad():
        pred = model(x_all[pred_idx]).numpy() * sd + mean if len(pred_idx) else np.empty((0, 2))
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"sampleID": samples[pred_idx], "x": pred[:, 0], "y": pred[:, 1]}).to_csv(
        f"{prefix}_predlocs.txt", index=False, float_format="%.3f"
    )
    pd.DataFrame(history, columns=["epoch", "loss", "val_loss", "val_median_error"]).to_csv(
        f"{prefix}_history.txt", index=False, float_format="%.6g"
    )
    print(
        f"{len(history)} epochs, best epoch {best[0]}: val loss {best[2]:.4f}, median "
        f"validation error {best[3]:.1f}; predicted {len(pred_idx)} locations "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
