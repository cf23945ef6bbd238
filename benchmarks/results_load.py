"""How long the results table of the full seed-001 grid takes to load (issue target: well
under 2 s for 27,270 tasks, read from the store, not by opening every result file).

It writes the seed-001 experiment at full size (101 sites × 9 factors × 30 seeds; prep,
train, predict, evaluate, combine) into a temp dir, seeds its store synthetically with every
task done and a dozen metrics per task (as `shoal run` would leave it), then times:

- ``exp.results("evaluate")`` in this process (the Python API), and
- the whole ``shoal results EXP --step evaluate --format csv -o FILE`` process,
- ``shoal results EXP --by factor --metric val_rmse`` (summaries over 27,270 rows),
- ``shoal results EXP --headline`` (the paired comparison: factor against factor 0 over
  101 sites, each the mean of 30 seeds), and
- ``shoal report EXP`` (the whole page: headline, tables, plots; every step's table).

Run by hand; prints its figures, asserts nothing::

    .venv/bin/python benchmarks/results_load.py [--sites 101] [--seeds 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_scale import find_shoal, seed_done_state, write_experiment

METRICS = ("val_rmse", "val_nse", "val_rmse_temp", "val_nse_temp", "train_rmse", "train_nse",
           "epochs", "final_loss", "best_epoch", "n_val_days", "lr", "seconds")


def seed_store(exp_dir: Path) -> int:
    """Every task done, with a dozen metrics each, in the store; folders made."""
    rng = random.Random(0)
    return seed_done_state(exp_dir, lambda: {m: rng.random() for m in METRICS})


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sites", type=int, default=101)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shoal", help="path of the shoal executable")
    args = ap.parse_args()
    shoal = find_shoal(args.shoal)
    if shoal is None:
        print("shoal executable not found (install the package or pass --shoal)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="shoal-results-load-"))
    try:
        exp_dir = work / "streamflow"
        path = write_experiment(exp_dir, args.sites, args.seeds)
        with open(path, "a") as fh:  # (what the report opens with)
            fh.write('\nexp.question("evaluate", metric="val_nse", x="factor", '
                     'replicates="seed", baseline=0)\n')
        t0 = time.perf_counter()
        n = seed_store(exp_dir)
        print(f"seeded {n:,} done tasks with {len(METRICS)} metrics each in "
              f"{time.perf_counter() - t0:.1f} s")
        from shoal.spec.loader import load_experiment

        api = []
        for _ in range(args.repeat):
            exp = load_experiment(str(exp_dir))
            t0 = time.perf_counter()
            frame = exp.results("evaluate")
            api.append(time.perf_counter() - t0)
        print(f"exp.results('evaluate'): {len(frame):,} rows x {frame.shape[1]} columns")
        out = work / "evaluate.csv"
        cli = [timed([*shoal, "results", str(exp_dir), "--step", "evaluate", "--format", "csv",
                      "-o", str(out)]) for _ in range(args.repeat)]
        summ = [timed([*shoal, "results", str(exp_dir), "--by", "factor", "--metric",
                       "val_rmse"]) for _ in range(args.repeat)]
        head = [timed([*shoal, "results", str(exp_dir), "--headline"])
                for _ in range(args.repeat)]
        page = work / "report.html"
        rep = [timed([*shoal, "report", str(exp_dir), "-o", str(page)])
               for _ in range(args.repeat)]
        print()
        print(f"Summary ({n:,} tasks in the store; {len(frame):,} evaluate rows; median of "
              f"{args.repeat})")
        print(f"  exp.results('evaluate') in-process       {statistics.median(api):.3f} s"
              "      target: well under 2 s")
        print(f"  shoal results --step evaluate -o csv     {statistics.median(cli):.3f} s"
              "      (whole process: import, plan, query, write)")
        print(f"  shoal results --by factor --metric ...   {statistics.median(summ):.3f} s")
        print(f"  shoal results --headline                 {statistics.median(head):.3f} s")
        print(f"  shoal report                             {statistics.median(rep):.3f} s"
              f"      ({page.stat().st_size / 1e6:.1f} MB page)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
