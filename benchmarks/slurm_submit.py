"""Submitting the full seed-001 train step to Slurm: how many sbatch calls, how long.

Writes the seed-001 experiment (101 sites × 9 factors × 30 seeds), marks every ``prep`` task
done (so all 27,270 ``train`` tasks are ready), and hands them to the Slurm backend the way
``shoal run --backend slurm`` does — specs built, bundles written, arrays chunked to the
cluster's MaxArraySize and submitted **held** (``--hold``), then cancelled. In the same run it
submits a 500-task slice the naive way (one ``sbatch`` per task, held, cancelled) and
extrapolates to 27,270. Target: <= 30 sbatch calls and < 10 s.

Needs a Slurm (``sudo scripts/local-slurm.sh`` makes a one-node one). Run by hand::

    .venv/bin/python benchmarks/slurm_submit.py [--sites 101] [--seeds 30] [--naive 500]
        [--max-array-size N]   # pretend the cluster's MaxArraySize is N (e.g. 1001)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_scale import write_experiment


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sites", type=int, default=101)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--naive", type=int, default=500, help="tasks submitted one by one")
    ap.add_argument("--max-array-size", type=int, help="override the cluster's MaxArraySize")
    args = ap.parse_args()
    if shutil.which("sbatch") is None:
        print("sbatch not found: start a Slurm first (scripts/local-slurm.sh)")
        return 0
    from shoal.backends.slurm import SlurmBackend, SlurmOptions, commands
    from shoal.plan.build import build_plan
    from shoal.schedule.controller import Controller, RunOptions
    from shoal.schedule.slots import Slots
    from shoal.spec.loader import load_experiment
    from shoal.state.store import Store

    work = Path(tempfile.mkdtemp(prefix="shoal-slurm-submit-"))
    jobs: list[str] = []
    try:
        exp_dir = work / "streamflow"
        write_experiment(exp_dir, args.sites, args.seeds)
        exp = load_experiment(str(exp_dir))
        t0 = time.perf_counter()
        plan = build_plan(exp, exp.root)
        prep = plan.steps["prep"]
        prep.state = [0] * len(prep)  # pretend prep ran: every train task is ready
        prep.run_ids = ["r"] * len(prep)
        for name in ("predict", "evaluate", "combine"):
            plan.steps[name].included = [False] * len(plan.steps[name])
        store = Store.open(exp.root, create=True)
        backend = SlurmBackend(root=exp.root, experiment=exp.name,
                               options=SlurmOptions(extra=["--hold"]))
        if args.max_array_size:
            backend._max_array = args.max_array_size
        ctl = Controller(plan, store, backend, Slots.cluster(), RunOptions())
        t_plan = time.perf_counter() - t0
        t1 = time.perf_counter()
        ctl._dispatch()
        backend._submit()
        t_submit = time.perf_counter() - t1
        n_tasks = sum(len(e.specs) for e in backend.elements.values())
        jobs = sorted({job for job, _ in backend.elements})
        print(f"shoal: {n_tasks:,} train tasks in {len(backend.elements):,} array elements, "
              f"{backend.submissions} sbatch calls ({len(jobs)} arrays), "
              f"MaxArraySize {backend._max_array}")
        commands.scancel(jobs)
        jobs = []

        naive_dir = work / "naive"
        naive_dir.mkdir()
        (naive_dir / "task.sh").write_text("#!/bin/bash\ntrue\n")
        t2 = time.perf_counter()
        for i in range(args.naive):
            out = subprocess.run(
                ["sbatch", "--parsable", "--hold", f"--output={naive_dir}/{i}.out",
                 str(naive_dir / "task.sh")], capture_output=True, text=True, check=True)
            jobs.append(out.stdout.strip().split(";")[0])
        t_naive = time.perf_counter() - t2
        commands.scancel(jobs)
        jobs = []
        per_task = t_naive / args.naive
        print()
        print(f"Summary ({n_tasks:,} tasks of the train step)")
        print(f"  shoal: plan (81,912 tasks)              {t_plan:.2f} s")
        print(f"  shoal: specs + bundles + sbatch          {t_submit:.2f} s     target < 10 s")
        print(f"  shoal: sbatch calls                      {backend.submissions}"
              "          target <= 30")
        print(f"  naive: {args.naive} x sbatch (one per task)    {t_naive:.2f} s "
              f"({per_task * 1000:.1f} ms each)")
        print(f"  naive, extrapolated to {n_tasks:,}         {per_task * n_tasks:.0f} s, "
              f"{n_tasks:,} sbatch calls")
        print(f"  naive / shoal (submission wall)          {per_task * n_tasks / t_submit:.0f}x")
    finally:
        if jobs:
            from shoal.backends.slurm import commands as c

            c.scancel(jobs)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
