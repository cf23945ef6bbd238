"""What the ``shoal`` commands share: loading the experiment with its config, ``--only``,
tables, warnings. Imported by :mod:`shoal.cli.main` and :mod:`shoal.cli.views` alike (so that
neither imports the other back)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError


def _rescue_target(args: argparse.Namespace) -> None:
    """``--config a=1 b=2 EXP``: nargs='+' swallows EXP; take back the item without '='."""
    if args.experiment is not None:
        return
    for name in ("config", "only"):
        items = getattr(args, name, None) or []
        for k, item in enumerate(items):
            if "=" not in item:
                args.experiment = items.pop(k)
                return
    if os.path.isfile("experiment.py"):  # (inside an experiment's folder: that one)
        args.experiment = "experiment.py"
        return
    raise ShoalError("give the experiment: a .py file or a folder with experiment.py (or run "
                     "in a folder that has an experiment.py)")


def _load(args: argparse.Namespace, reuse_config: bool = False) -> Any:
    """Load the experiment. Read-only views (status, results, report, logs) reuse the config
    of the last run on the root when none is given, so they show the grid that ran."""
    from shoal.spec import configuration as cfg
    from shoal.spec.loader import load_experiment

    _rescue_target(args)
    values: dict[str, Any] = {}
    if args.config_file:
        values.update(cfg.load_file(args.config_file))
    values.update(cfg.parse_assignments(args.config))
    root = args.root or os.environ.get("SHOAL_ROOT")
    exp = load_experiment(args.experiment, values)
    if root:
        exp.root = Path(root)
    recorded = _recorded_config(exp.root) if not values else {}
    if recorded:
        shown = " ".join(f"{k}={json.dumps(v)}" for k, v in recorded.items())
        if not reuse_config:  # plan, run: the defaults, as asked, but said (it may rerun)
            print(f"shoal: note: the last run on this root used --config {shown}; this "
                  "one uses the defaults (give --config to plan that grid)", file=sys.stderr)
            return exp
        print(f"shoal: using the config of the last run: {shown} (--config overrides)",
              file=sys.stderr)
        exp = load_experiment(args.experiment, recorded)
        if root:
            exp.root = Path(root)
    return exp


def _recorded_config(root: Path) -> dict[str, Any]:
    from shoal.state.store import Store

    with Store.open(root) as store:
        raw = store.get_meta("config")
    return json.loads(raw) if raw else {}


def _only(exp: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    from shoal.plan.build import parse_only

    items = getattr(args, "only", None)
    return parse_only(exp, items) if items else None


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[f"{c:,}" if isinstance(c, int) else str(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    lines = []
    for r in cells:
        lines.append("  ".join(
            c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))
        ))
    return "\n".join(lines)


def _warn(exp: Any) -> None:
    for w in exp.warnings:
        print(f"shoal: warning: {w}", file=sys.stderr)
