"""The argument parsers of the commands that read results: ``results`` (with its
comparisons), ``report``, ``export`` and ``serve``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def add(sub: Any, _common: Callable[..., None], _view: Callable[[str], Any]) -> None:
    p = sub.add_parser("results", help="the results table (params x metrics), or summaries")
    _common(p, only=False)
    p.add_argument("--step", help="step to show (default: the per-run step, e.g. evaluate)")
    p.add_argument("--by", nargs="+", action="extend", default=[], metavar="DIM",
                   help="summarise per value of these dimensions across the others")
    p.add_argument("--metric", nargs="+", action="extend", default=[], metavar="NAME",
                   help="metrics to summarise (default: every numeric metric)")
    p.add_argument("--summary", action="store_true", help="summarise over everything "
                   "(same as --by with no dimension)")
    q = p.add_argument_group("comparisons (--by DIM with one of these; see the guide)")
    q.add_argument("--baseline", metavar="DIM=VALUE", help="compare every level of --by with "
                   "this one, paired on the other dimensions (paired t, Wilcoxon, Holm)")
    q.add_argument("--replicates", nargs="+", action="extend", default=[], metavar="DIM",
                   help="dimensions averaged within each block first (e.g. seed); n counts "
                   "the blocks (the other dimensions, e.g. site)")
    q.add_argument("--split", metavar="DIM", help="compare separately per value of DIM")
    q.add_argument("--lower-is-better", action="store_true", help="the metric improves as it "
                   "falls (an error, a loss); default: the experiment's exp.metric(...), "
                   "else higher is better")
    q.add_argument("--headline", action="store_true", help="the answer to the experiment's "
                   "exp.question(...)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the CI")
    p.add_argument("--format", choices=["table", "csv", "parquet", "json"], default="table",
                   help="table (aligned text, the default), csv, json (exact numbers) or "
                   "parquet (needs -o FILE and pyarrow)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=_view("cmd_results"))

    p = sub.add_parser("report", help="one self-contained HTML page: the headline answer, "
                       "learning curves, counts, durations, failures, plots, tables")
    _common(p, only=False)
    p.add_argument("-o", "--output", metavar="FILE", default="report.html",
                   help="where to write the page (default: report.html)")
    p.add_argument("--all", action="store_true", help="every plot, also of constant metrics, "
                   "per-seed and one-value groups")
    p.set_defaults(func=_view("cmd_report"))


    p = sub.add_parser("export", help="the results into MLflow or TensorBoard (only new or "
                       "changed tasks again)")
    _common(p, only=False)
    p.add_argument("--to", required=True, nargs=2, metavar=("TRACKER", "DEST"),
                   help="mlflow DEST (a tracking URI, or a folder: a file store) or "
                   "tensorboard DEST (the log folder)")
    p.add_argument("--step", nargs="+", action="extend", default=[], metavar="STEP",
                   help="only these steps (default: every step)")
    p.set_defaults(func=_view("cmd_export"))

    p = sub.add_parser("serve", help="a live dashboard of the experiment in the browser "
                       "(read-only; 127.0.0.1 and a token by default)")
    _common(p, only=False)
    p.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0: any "
                   "free one)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default "
                   "127.0.0.1: only this machine; reach it from a laptop with ssh -L)")
    p.set_defaults(func=_view("cmd_serve"))
