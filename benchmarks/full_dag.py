"""How long does the whole seed-001 DAG of trivial tasks take to run locally?

The experiment of ``plan_scale.py`` (101 sites x 9 factors x 30 seeds: ``prep``, then
``train``, ``predict`` and ``evaluate`` per site x factor x seed, one ``combine``: 81,912
tasks) with steps that return at once, run by ``shoal run -j J`` from an empty run root.
What is timed is shoal's own cost per task: planning, dispatch, result files, the store,
the gather's 27,270 rows. Target (issue 16): under 45 s with ``-j 2``.

``--baseline CMD`` times another shoal the same way in the same run (e.g. an older checkout:
``--baseline "env PYTHONPATH=/tmp/old/src python -m shoal.cli"``) and prints the ratio.
Run by hand; it prints its figures and never asserts::

    python benchmarks/full_dag.py                  # full size, -j 2, 1 repeat
    python benchmarks/full_dag.py --sites 10       # a quick check (8,102 tasks)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_scale import find_shoal, write_experiment

TARGET_S = 45.0


def run_once(cmd: list[str], work: Path, sites: int, seeds: int, jobs: int,
             timeout: float) -> tuple[float, int]:
    """A fresh folder, one ``shoal run``; returns (wall seconds, tasks done)."""
    shutil.rmtree(work, ignore_errors=True)
    path = write_experiment(work, sites, seeds)
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, "run", str(path), "-j", str(jobs), "--progress", "none"],
                         cwd=work, capture_output=True, text=True, timeout=timeout,
                         check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"shoal run failed ({res.returncode}):\n{res.stderr[-3000:]}")
    status = subprocess.run([*cmd, "status", str(path), "--json"], cwd=work,
                            capture_output=True, text=True, check=True)
    doc = json.loads(status.stdout)
    done = sum(s.get("done", 0) for s in doc["steps"].values())
    return wall, done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sites", type=int, default=101, help="sites (101)")
    p.add_argument("--seeds", type=int, default=30, help="seeds (30)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="slots (2)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each side (1)")
    p.add_argument("--shoal", metavar="PATH", help="the shoal executable to time")
    p.add_argument("--baseline", metavar="CMD", help="another shoal command line to compare")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args(argv)
    shoal = find_shoal(args.shoal)
    if shoal is None:
        raise SystemExit("no shoal executable found (pass --shoal PATH)")
    tasks = args.sites + 3 * args.sites * 9 * args.seeds + 1
    print(f"full DAG: {tasks:,} trivial tasks ({args.sites} sites x 9 factors x {args.seeds} "
          f"seeds), -j {args.jobs}, {os.cpu_count()} CPUs; target < {TARGET_S:g} s")
    sides = [("shoal", shoal)] + ([("baseline", shlex.split(args.baseline))]
                                  if args.baseline else [])
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="shoal-dag-") as tmp:
        for r in range(args.repeat):
            for name, cmd in sides:  # (interleaved: drift hits both sides alike)
                wall, done = run_once(cmd, Path(tmp) / name, args.sites, args.seeds,
                                      args.jobs, args.timeout)
                best[name] = min(best.get(name, wall), wall)
                print(f"  {name:<9} run {r + 1}: {wall:7.2f} s  {done:,} done  "
                      f"{done / wall:8.0f} tasks/s")
    for name, wall in best.items():
        print(f"{name}: best {wall:.2f} s ({tasks / wall:.0f} tasks/s)"
              + (f"  [{'under' if wall < TARGET_S else 'OVER'} the {TARGET_S:g} s target]"
                 if name == "shoal" else ""))
    if "baseline" in best:
        print(f"ratio shoal / baseline: {best['shoal'] / best['baseline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
