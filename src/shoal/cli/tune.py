"""``shoal tune EXP STEP``: print the measured table and the recommendation (the
measuring is :mod:`shoal.api.tune`)."""

from __future__ import annotations

import argparse
import sys

from shoal.cli.common import _load, _table
from shoal.errors import ShoalError


def cmd_tune(args: argparse.Namespace) -> int:
    import time

    from shoal.api.tune import HEADER, advice, best, table, tune

    exp = _load(args)
    if args.backend == "slurm":
        from shoal.api.tune import on_slurm_node
        from shoal.backends.slurm import SlurmOptions, profile

        path = (profile.find(args.profile, exp.source.parent if exp.source else None)
                if args.profile else None)
        return on_slurm_node(exp, args, SlurmOptions.from_profile(path,
                                                                  partition=args.partition))
    threads = None
    if args.threads:
        try:
            threads = [int(t) for t in args.threads.split(",")]
        except ValueError:
            raise ShoalError(f"--threads {args.threads}: give whole numbers, e.g. 1,2,4") from None
    t0 = time.time()
    settings = tune(exp, args.step, sample=args.sample, repeats=args.repeats,
                    threads=threads, cores=args.jobs,
                    say=lambda line: print(line, file=sys.stderr))
    print(_table(table(settings), HEADER))
    print(advice(args.step, settings))
    print(f"(measured in {time.time() - t0:.1f} s; the samples' results were not kept)")
    chosen = best(settings)
    if args.write_profile and chosen is not None:
        from shoal.backends.slurm import profile

        path = profile.target(args.write_profile, exp.source.parent if exp.source else None)
        profile.write_step_cpus(path, args.step, chosen.threads,
                                f"shoal tune: {chosen.rate:,.0f} tasks/h")
        print(f"wrote cpus = {chosen.threads} into [steps.{args.step}] of {path}")
    return 0
