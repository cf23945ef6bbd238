"""The other commands of ``shoal``: results, report, logs, cancel, pack-data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shoal.cli import _load
from shoal.errors import ShoalError


def cmd_cancel(args: argparse.Namespace) -> int:
    from shoal.backends.slurm import cancel, commands

    exp = _load(args)
    if not commands.available():
        raise ShoalError("shoal cancel: sbatch/scancel are not on PATH (no Slurm here)")
    arrays, elements = cancel(exp.root)
    if not arrays:
        print(f"shoal: no Slurm jobs of {exp.root} are queued or running", file=sys.stderr)
        return 0
    print(f"shoal: cancelled {len(arrays)} array(s) ({', '.join(arrays)}), {elements} "
          "element(s) queued or running", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from shoal.report import write_report

    exp = _load(args, reuse_config=True)
    path = write_report(exp, Path(args.output))
    print(f"shoal: wrote {path}", file=sys.stderr)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from shoal.results import results, summary, write_table

    exp = _load(args, reuse_config=True)
    plan = exp.plan()
    if args.by or args.metric or args.summary:
        frame = summary(exp, args.step, by=args.by, metrics=args.metric or None,
                        level=args.level, plan=plan)
    else:
        frame = results(exp, args.step, plan=plan)
    text = write_table(frame, args.format, Path(args.output) if args.output else None)
    if text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from shoal.resultfile import LOG

    exp = _load(args, reuse_config=True)
    plan = exp.plan()
    if args.step not in plan.steps:
        raise ShoalError(f"unknown step '{args.step}' (steps: {', '.join(plan.steps)})")
    sp = plan.steps[args.step]
    want = {}
    for item in args.params:
        dim, sep, value = item.partition("=")
        if not sep or dim not in sp.dims:
            raise ShoalError(f"'{item}': give DIM=VALUE with a dimension of '{sp.name}' "
                             f"({', '.join(sp.dims) or 'none'})")
        want[dim] = value
    from shoal.paths import decode, value_text

    want = {d: decode(v) for d, v in want.items()}  # labels show encoded values; accept both
    hits = [i for i in range(len(sp)) if all(
        value_text(v) == want[d] for d, v in sp.param_dict(i).items() if d in want)]
    if len(hits) != 1:
        shown = ", ".join(plan.task_label(sp, i) for i in hits[:5])
        raise ShoalError(
            f"{len(hits)} tasks of '{sp.name}' match {' '.join(args.params) or '(nothing)'}"
            + (f" (e.g. {shown})" if hits else "") + "; give every dimension: "
            + " ".join(f"{d}=..." for d in sp.dims)
        )
    key = sp.keys[hits[0]]
    folder = plan.root / sp.name / key if key else plan.root / sp.name
    path = folder / LOG
    if not path.exists():
        label = plan.task_label(sp, hits[0])
        if not folder.exists():
            raise ShoalError(f"{label} has not run yet (no folder {folder})")
        print(f"{label} wrote no output (no {LOG} in {folder})", file=sys.stderr)
        return 0
    text = path.read_text(errors="replace")
    if args.tail:
        text = "\n".join(text.splitlines()[-args.tail:]) + "\n"
    sys.stdout.write(text)
    return 0


def cmd_pack_data(args: argparse.Namespace) -> int:
    from shoal.staging import archive_name, pack_data

    n = pack_data(args.folder, args.output)
    size = os.path.getsize(args.output)
    print(f"shoal: {n:,} files from {args.folder} in {args.output} ({size / 2**20:.1f} MiB); "
          f"stage=[\"{args.output}\"] and ctx.staged(\"{archive_name(args.output)}\") use it",
          file=sys.stderr)
    return 0
