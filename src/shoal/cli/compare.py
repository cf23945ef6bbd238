"""``shoal results --baseline/--replicates/--split/--headline``: the comparison of the levels
of one dimension (:mod:`shoal.results.compare`), as a table with its method and sentences."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.plan.build import pick_values
from shoal.results.compare import Answer, headline
from shoal.results.table import (
    default_step,
    json_rows,
    metric_columns,
    results,
    write_table,
)
from shoal.spec.question import Question


def question_from_args(exp: Any, plan: Any, args: argparse.Namespace) -> list[Question]:
    """One question per metric from the flags (``--by`` names x; ``--baseline DIM=VALUE``
    may name it instead)."""
    step = args.step or default_step(plan)
    if step not in plan.steps:
        raise ShoalError(f"--step {step}: no such step (steps: {', '.join(plan.steps)})")
    dims = plan.steps[step].dims
    base = None
    x = args.by[0] if len(args.by) == 1 else None
    if len(args.by) > 1:
        raise ShoalError(f"--by {' '.join(args.by)}: a comparison has one x dimension; "
                         f"give one, and the others as --split or --replicates")
    if args.baseline:
        dim, sep, text = args.baseline.partition("=")
        if not sep or dim not in dims:
            raise ShoalError(f"--baseline {args.baseline}: give DIM=VALUE with a dimension of "
                             f"step '{step}' ({', '.join(dims) or 'none'}), e.g. "
                             f"--baseline {(x or (dims or ['factor'])[0])}=0")
        if x is not None and dim != x:
            raise ShoalError(f"--baseline {args.baseline}: the baseline is a level of --by "
                             f"{x}; give --baseline {x}=VALUE")
        x = dim
        base = pick_values(exp.grid.values[dim], dim, text, f"--baseline {args.baseline}")[0]
    if x is None:
        raise ShoalError("a comparison needs its x dimension: --by DIM (e.g. --by factor "
                         "--baseline factor=0 --replicates seed)")
    frame_metrics = metric_columns(results(exp, step, plan=plan), dims)
    metrics = list(args.metric) or frame_metrics
    if not metrics:
        raise ShoalError(f"step '{step}' has no numeric metrics yet; name one with --metric")
    for m in metrics:
        if m not in frame_metrics:
            raise ShoalError(f"--metric {m}: step '{step}' has no numeric metric '{m}' "
                             f"(metrics: {', '.join(frame_metrics) or 'none yet'})")
    better = False if args.lower_is_better else None
    return [Question(step, m, x, tuple(args.replicates), None, base, args.split, better)
            for m in metrics]


def cmd_compare(exp: Any, plan: Any, args: argparse.Namespace) -> int:
    if args.headline:
        if exp.headline is None:
            raise ShoalError(f"experiment '{exp.name}' asks no question: add exp.question("
                             "STEP, metric=..., x=..., replicates=..., baseline=...) or "
                             "compare with --by DIM --baseline DIM=VALUE")
        questions = [exp.headline]
    else:
        questions = question_from_args(exp, plan, args)
    answers = []
    for q in questions:
        got = headline(exp, plan, q, level=args.level)
        assert got is not None
        answers.append(got)
    if args.format == "json":
        text = json.dumps([_doc(a) for a in answers], default=str, indent=1)
    else:
        import pandas as pd

        frame = pd.concat([a.table.assign(metric=a.question.metric) for a in answers],
                          ignore_index=True)
        frame = frame[["metric", *[c for c in frame.columns if c != "metric"]]]
        if args.format in ("csv", "parquet"):
            got_text = write_table(frame, args.format, Path(args.output) if args.output
                                   else None)
            if got_text is not None:
                sys.stdout.write(got_text)
            return 0
        text = write_table(frame, "table", None) or ""
        notes = [f"n: {answers[0].units}; {answers[0].method}"]
        notes += [s for a in answers for s in a.sentences]
        text += "\n\n" + "\n".join(notes)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


def _doc(a: Answer) -> dict[str, Any]:
    q = a.question
    return {"step": q.step, "metric": q.metric, "x": q.x, "baseline": q.baseline,
            "replicates": list(q.replicates), "blocks": list(q.blocks or ()),
            "split": q.split, "higher_is_better": q.higher_is_better, "n_counts": a.units,
            "method": a.method, "sentences": a.sentences,
            "rows": json_rows(a.table)}
