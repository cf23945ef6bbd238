"""``shoal report``: one self-contained HTML page (images inline, no network).

Per step: counts and a histogram of task durations; failures with their log tails; each
metric plotted against each dimension (box plot with the points across the other
dimensions); summary tables per dimension. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.plan.build import build_plan
from shoal.results.table import metric_columns, results, summarise
from shoal.state.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from shoal.plan.build import Plan
    from shoal.spec.experiment import Experiment

MAX_PLOTS = 60
MAX_CATEGORIES = 40

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
pre{background:#f8f8f8;border:1px solid #eee;padding:.5rem;overflow-x:auto;font-size:.8rem}
.fail{color:#b00020}.muted{color:#777}.plots{display:flex;flex-wrap:wrap;gap:.5rem}
.plots img{max-width:520px;border:1px solid #eee}
"""

_CHECK = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-ok", ok + "/" + imgs.length);
});
</script>
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}",
                         na_rep="")


def _duration_hist(frame: pd.DataFrame, step: str) -> str | None:
    durations = frame["duration"].dropna()
    if len(durations) < 2:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.hist(durations, bins=min(40, max(5, len(durations) // 5)), color="#4c78a8")
    ax.set_xlabel("task duration (s)")
    ax.set_ylabel("tasks")
    ax.set_title(f"{step}: durations")
    return _png(fig)


def _metric_plot(frame: pd.DataFrame, dim: str, metric: str, step: str) -> str | None:
    done = frame[frame["status"] == "done"]
    vals = done[[dim, metric]].dropna()
    if vals.empty:
        return None
    cats = sorted(vals[dim].unique(), key=lambda v: (isinstance(v, str), v))
    if len(cats) > MAX_CATEGORIES:
        return None
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [vals.loc[vals[dim] == c, metric].astype(float).to_numpy() for c in cats]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.boxplot(groups, showfliers=False)
    rng = np.random.default_rng(0)
    for k, g in enumerate(groups, start=1):
        ax.plot(k + rng.uniform(-0.15, 0.15, len(g)), g, ".", alpha=0.5, color="#e45756",
                markersize=4)
    ax.set_xticks(range(1, len(cats) + 1))
    ax.set_xticklabels([str(c) for c in cats], rotation=45 if len(cats) > 8 else 0,
                       fontsize=8)
    ax.set_xlabel(dim)
    ax.set_ylabel(metric)
    ax.set_title(f"{step}: {metric} by {dim}", fontsize=10)
    return _png(fig)


def build_report(exp: Experiment, plan: Plan | None = None) -> str:
    """The report page as one HTML string."""
    import matplotlib

    matplotlib.use("Agg")
    plan = plan or build_plan(exp, exp.root, missing_inputs="skip")
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>shoal report: "
             f"{esc(exp.name)}</title><style>{_CSS}</style></head><body>"]
    summary = plan.summary()
    done = summary["total"] - summary["run"]
    parts.append(f"<h1>{esc(exp.name)}</h1><p class='muted'>{done:,} of {summary['total']:,} "
                 f"tasks done · root {esc(str(plan.root))} · "
                 f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>")
    frames = {name: results(exp, name, plan=plan) for name in plan.steps}
    counts = []
    for name, frame in frames.items():
        c = frame["status"].value_counts()
        counts.append({"step": name, "total": len(frame),
                       **{s: int(c.get(s, 0)) for s in
                          ("done", "changed", "failed", "missing", "skipped", "interrupted")}})
    import pandas as pd

    parts.append("<h2>Tasks</h2>" + _table(pd.DataFrame(counts)))
    hists = [h for name, f in frames.items() if (h := _duration_hist(f, name))]
    if hists:
        parts.append("<div class='plots'>" + "".join(hists) + "</div>")
    parts.append(_failures(plan.root))
    plots = 0
    for name, frame in frames.items():
        sp = plan.steps[name]
        metrics = metric_columns(frame, sp.dims)
        if not metrics or not sp.dims:
            if metrics and len(frame):
                parts.append(f"<h2>{esc(name)}</h2>" + _table(frame[metrics]))
            continue
        parts.append(f"<h2>{esc(name)}: metrics</h2>")
        imgs = []
        for dim in sp.dims:
            for m in metrics:
                if plots >= MAX_PLOTS:
                    break
                img = _metric_plot(frame, dim, m, name)
                if img:
                    imgs.append(img)
                    plots += 1
        if imgs:
            parts.append("<div class='plots'>" + "".join(imgs) + "</div>")
        for dim in sp.dims:
            if frame[dim].nunique() > MAX_CATEGORIES:
                continue
            parts.append(f"<h3>{esc(name)}: summary by {esc(dim)}</h3>")
            parts.append(_table(summarise(frame, [dim], metrics)))
    parts.append(_CHECK + "</body></html>")
    return "\n".join(parts)


def _failures(root: Path) -> str:
    with Store.open(root) as store:
        failed = list(store.records(status="failed"))
    if not failed:
        return "<h2>Failures</h2><p>none</p>"
    esc = html.escape
    out = [f"<h2 class='fail'>Failures ({len(failed)})</h2>"]
    for r in failed[:50]:
        label = f"{r.step}[{r.key.replace('/', ',')}]" if r.key else r.step
        out.append(f"<h3 class='fail'>{esc(label)}</h3><p>{esc(r.error or '')}</p>")
        if r.log_tail:
            out.append(f"<pre>{esc(r.log_tail)}</pre>")
    if len(failed) > 50:
        out.append(f"<p>... and {len(failed) - 50} more (shoal status)</p>")
    return "\n".join(out)


def write_report(exp: Experiment, path: Path) -> Path:
    """Write the report to ``path``."""
    path.write_text(build_report(exp), encoding="utf-8")
    return path
