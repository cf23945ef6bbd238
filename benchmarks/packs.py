"""Packs vs one training per task: the streamflow LSTM, in one run.

For each grid — 30 seeds of one (site, factor), and 9 factors x 30 seeds of one site — it
times, on the same machine one after the other:

* (a) one ``python train.py`` process per training, ``-j`` at a time: what a Slurm array
  does (each process imports torch, simulates the site, trains, evaluates);
* (b) ``shoal run examples/streamflow`` unpacked: persistent workers, one training per task;
* (c) the same with ``--config pack=1``: each pack of (factor, seed) models of the site is
  trained as one stacked model (``shoal.torch``), ``--pack-size`` members per pack.

(b) and (c) run the whole pipeline (prep once, train, evaluate per task, combine). It prints
the wall times and the ratios a/c and b/c. On a GPU machine (``--device cuda``) the trainings
run there; the goal on a GPU is (c) >= 10x faster than (b); on a small CPU, (c) should be no
slower than (b). Performance is printed, never asserted::

    python benchmarks/packs.py                       # both grids, 80 epochs (~15 min on 2 cores)
    python benchmarks/packs.py --grid seeds          # 30 seeds only (~3 min)
    python benchmarks/packs.py --epochs 20 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_throughput import (
    LSTM_SITE,
    REPO,
    STREAMFLOW,
    find_shoal,
    timed,
)

GRIDS = {"seeds": ([1], 30), "factors": ([0, 1, 5, 10, 20, 40, 80, 160, 320], 30)}


def array(python: str, work: Path, factors: list[int], seeds: int, epochs: int, jobs: int,
          device: str) -> float:
    pairs = [(f, s) for f in factors for s in range(seeds)]

    def one(pair: tuple[int, int]) -> bool:
        f, s = pair
        cmd = [python, str(STREAMFLOW / "train.py"), "--site", LSTM_SITE, "--factor", str(f),
               "--seed", str(s), "--epochs", str(epochs), "--device", device,
               "--out", str(work / f"f{f}-s{s}")]
        return timed(f"train.py f={f} s={s}", cmd, REPO, 3600).ok

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        ok = sum(pool.map(one, pairs))
    wall = time.perf_counter() - start
    print(f"  (a) {len(pairs)} x train.py, {jobs} at a time: {wall:.1f} s ({ok} ok)")
    return wall


def shoal_run(shoal: list[str], root: Path, factors: list[int], seeds: int, epochs: int,
              jobs: int, extra: list[str], label: str) -> float:
    cmd = [*shoal, "run", str(STREAMFLOW), "-j", str(jobs), "--progress", "none",
           "--root", str(root), "--config", "sites=1", f"factors={json.dumps(factors)}",
           f"seeds={seeds}", f"epochs={epochs}", *extra]
    t = timed(label, cmd, REPO, 3600)
    status = "ok" if t.ok else f"FAILED: {t.stderr[-500:]}"
    print(f"  {label}: {t.wall_s:.1f} s, cpu {t.cpu_s or 0:.1f} s ({status})")
    return t.wall_s if t.ok else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", choices=["seeds", "factors", "both"], default="both")
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--pack-size", type=int, default=30)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (for train.py; shoal "
                    "detects GPUs itself)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--shoal", help="the shoal executable (default: beside this Python)")
    ap.add_argument("--skip-array", action="store_true", help="skip (a)")
    args = ap.parse_args()
    shoal = find_shoal(args.shoal)
    if shoal is None:
        print("shoal not found", file=sys.stderr)
        return 1
    grids = ["seeds", "factors"] if args.grid == "both" else [args.grid]
    summary = []
    work = Path(tempfile.mkdtemp(prefix="shoal-packs-"))
    try:
        for name in grids:
            factors, seeds = GRIDS[name]
            n = len(factors) * seeds
            print(f"\n{name}: {n} trainings ({len(factors)} factor(s) x {seeds} seeds), "
                  f"{args.epochs} epochs, -j {args.jobs}, pack size {args.pack_size}")
            a = float("nan") if args.skip_array else array(
                args.python, work / f"{name}-a", factors, seeds, args.epochs, args.jobs,
                args.device)
            b = shoal_run(shoal, work / f"{name}-b", factors, seeds, args.epochs, args.jobs,
                          [], "(b) shoal, unpacked")
            c = shoal_run(shoal, work / f"{name}-c", factors, seeds, args.epochs, args.jobs,
                          ["pack=1", f"pack_size={args.pack_size}"], "(c) shoal, packed")
            summary.append((name, n, a, b, c))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nSummary ({args.epochs} epochs, -j {args.jobs}, device {args.device}; wall "
          "seconds of the whole run)")
    print(f"  {'grid':<8} {'trainings':>9} {'(a) array':>10} {'(b) shoal':>10} "
          f"{'(c) packed':>11} {'a/c':>6} {'b/c':>6}")
    for name, n, a, b, c in summary:
        print(f"  {name:<8} {n:>9} {a:>10.1f} {b:>10.1f} {c:>11.1f} {a / c:>6.2f} "
              f"{b / c:>6.2f}")
    print("  goal: b/c >= 10 on a GPU; b/c >= 1 (no slower) on a 2-core CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
