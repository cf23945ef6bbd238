"""Synthetic genotypes with isolation by distance, in locator's file formats (numpy only).

``N`` diploid individuals live at random places on a ``width`` × ``height`` km landscape.
Every SNP's allele frequency varies smoothly in space::

    logit p(x, y) = b + g · (position - centre) / width + Σ_k a_k exp(-d_k² / 2 s_k²)

(a random intercept, a random linear cline and a few random Gaussian bumps of 100–300 km),
and each genotype is a binomial draw of two alleles, 0/1/2. Near neighbours therefore
share allele frequencies and far ones do not: isolation by distance, which is what lets
locator predict where a sample came from. Everything is deterministic for a given seed.

Files, as locator reads them:

- the genotype matrix (``--matrix``): tab-separated, one row per individual, a header
  ``sampleID snp0 snp1 ...`` and allele counts 0/1/2;
- ``truth.tsv``: ``sampleID x y`` for every individual (km, origin at the south-west corner);
- per test set a ``sample_data`` file (``--sample_data``): ``sampleID x y``, tab-separated,
  with ``x`` and ``y`` = ``NA`` for the test set's individuals (10 % of them, a different
  random draw per test set) — the ``data/potr_m_pred{0..4}.txt`` files of the Slurm example.

Without shoal, the whole data set of the Slurm example in one go::

    python simulate.py --out data --test_sets 5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_SAMPLES = 400
DEFAULT_SNPS = 300
DEFAULT_WIDTH_KM = 1000.0
DEFAULT_HEIGHT_KM = 600.0
DEFAULT_BUMPS = 3
DEFAULT_TEST_FRACTION = 0.1


def simulate_landscape(
    n_samples: int = DEFAULT_SAMPLES,
    n_snps: int = DEFAULT_SNPS,
    *,
    width_km: float = DEFAULT_WIDTH_KM,
    height_km: float = DEFAULT_HEIGHT_KM,
    n_bumps: int = DEFAULT_BUMPS,
    seed: int = 0,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Simulate individuals and their genotypes.

    Returns ``(sample_ids, coords, genotypes)``: ids ``s0000, s0001, ...``, coordinates in
    km as an ``(n_samples, 2)`` float array, and allele counts as an ``(n_samples, n_snps)``
    int8 array of 0/1/2.
    """
    rng = np.random.default_rng(seed)
    size = np.array([width_km, height_km])
    coords = rng.uniform(0.0, 1.0, size=(n_samples, 2)) * size

    # One smooth field per SNP, evaluated at every individual: (n_samples, n_snps).
    intercept = rng.normal(0.0, 1.0, size=n_snps)
    cline = rng.normal(0.0, 1.5, size=(2, n_snps))
    logit = intercept + ((coords - size / 2) / width_km) @ cline
    centres = rng.uniform(0.0, 1.0, size=(n_bumps, n_snps, 2)) * size
    amplitudes = rng.normal(0.0, 2.0, size=(n_bumps, n_snps))
    widths = rng.uniform(100.0, 300.0, size=(n_bumps, n_snps))
    for k in range(n_bumps):
        d2 = ((coords[:, None, :] - centres[k][None, :, :]) ** 2).sum(axis=-1)
        logit += amplitudes[k] * np.exp(-d2 / (2.0 * widths[k] ** 2))
    freq = np.clip(1.0 / (1.0 + np.exp(-logit)), 0.01, 0.99)

    genotypes = rng.binomial(2, freq).astype(np.int8)
    sample_ids = [f"s{i:04d}" for i in range(n_samples)]
    return sample_ids, coords, genotypes


def write_genotype_matrix(path: Path, sample_ids: Sequence[str], genotypes: np.ndarray) -> None:
    """Write the genotype matrix: header ``sampleID snp0 ...``, one row per individual."""
    header = "\t".join(["sampleID", *(f"snp{j}" for j in range(genotypes.shape[1]))])
    with open(path, "w") as fh:
        fh.write(header + "\n")
        for sid, row in zip(sample_ids, genotypes):
            fh.write(sid + "\t" + "\t".join(map(str, row.tolist())) + "\n")


def write_locations(
    path: Path, sample_ids: Sequence[str], coords: np.ndarray, hide: np.ndarray | None = None
) -> None:
    """Write ``sampleID x y`` (tab-separated, km); rows where ``hide`` is true get ``NA``."""
    with open(path, "w") as fh:
        fh.write("sampleID\tx\ty\n")
        for i, (sid, (x, y)) in enumerate(zip(sample_ids, coords)):
            if hide is not None and hide[i]:
                fh.write(f"{sid}\tNA\tNA\n")
            else:
                fh.write(f"{sid}\t{x:.3f}\t{y:.3f}\n")


def read_locations(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a ``sampleID x y`` file; ``NA`` becomes NaN."""
    ids: list[str] = []
    rows: list[tuple[float, float]] = []
    with open(path) as fh:
        next(fh)  # header
        for line in fh:
            if not line.strip():
                continue
            sid, x, y = line.rstrip("\n").split("\t")
            ids.append(sid)
            rows.append(
                (float("nan") if x == "NA" else float(x), float("nan") if y == "NA" else float(y))
            )
    return ids, np.array(rows, dtype=float).reshape(-1, 2)


def holdout_mask(
    n_samples: int, test_set: int, *, fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0
) -> np.ndarray:
    """Which individuals test set ``test_set`` holds out: a boolean mask, ``fraction`` of them
    (at least one), a different random draw per test set."""
    rng = np.random.default_rng([seed, 1 + test_set])
    n_test = max(1, round(fraction * n_samples))
    mask = np.zeros(n_samples, dtype=bool)
    mask[rng.choice(n_samples, size=n_test, replace=False)] = True
    return mask


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    p.add_argument("--snps", type=int, default=DEFAULT_SNPS)
    p.add_argument("--test_sets", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Write genotypes.txt, truth.tsv and sample_data{0..T-1}.tsv into ``--out``."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ids, coords, genotypes = simulate_landscape(args.samples, args.snps, seed=args.seed)
    write_genotype_matrix(args.out / "genotypes.txt", ids, genotypes)
    write_locations(args.out / "truth.tsv", ids, coords)
    for t in range(args.test_sets):
        hide = holdout_mask(len(ids), t, seed=args.seed)
        write_locations(args.out / f"sample_data{t}.tsv", ids, coords, hide)
    print(
        f"{len(ids)} samples × {genotypes.shape[1]} SNPs, {args.test_sets} test sets in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
