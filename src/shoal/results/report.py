"""``shoal report``: one self-contained HTML page (figures inline, no network) that opens with
the answer to the experiment's question.

1. **Headline** (``exp.question(...)``): the sentences comparing each level with the baseline,
   the metric against x with mean ± CI over blocks, the paired differences (hover a point for
   its values), and the table with the method and what n counts.
2. **Learning curves** from the tasks' histories (``ctx.log(epoch=..., ...)``): mean ± CI
   bands per level of the headline's x.
3. **Tasks**: counts and durations per step (gathers too); **failures** with their log tails.
4. Per step, its metrics: constant metrics, dimensions with one value, per-seed plots and
   groups of single values are left out (``all_plots=True``, ``shoal report --all``, keeps
   them); a step with the headline's x draws its other dimensions as a line per level of x
   instead of pooling them; with a question, only its step's metrics are drawn (the other
   steps' are tables). Tables sort on a click.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.errors import ShoalError
from shoal.plan.build import build_plan
from shoal.results import figures, page
from shoal.results.compare import Answer, headline
from shoal.results.history import bands, curve_metrics, read_histories, x_of
from shoal.results.states import STATES
from shoal.results.states import counts as state_counts
from shoal.results.table import metric_columns, results, summarise
from shoal.spec.question import SEED_NAMES, MetricInfo
from shoal.state.resultfile import HISTORY
from shoal.state.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from shoal.plan.build import Plan
    from shoal.spec.experiment import Experiment

MAX_PLOTS = 40
MAX_CATEGORIES = 40
MAX_CURVES = 8

esc = html.escape


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.sections: list[tuple[str, str, int]] = []

    def section(self, title: str, depth: int = 1, cls: str = "") -> None:
        sid = page.anchor(title)
        self.sections.append((sid, title, depth))
        tag = "h2" if depth == 1 else "h3"
        klass = f" class='{cls}'" if cls else ""
        self.parts.append(f"<{tag} id='{sid}'{klass}>{esc(title)}</{tag}>")

    def add(self, text: str) -> None:
        self.parts.append(text)


def build_report(exp: Experiment, plan: Plan | None = None, all_plots: bool = False) -> str:
    """The report page as one HTML string."""
    import pandas as pd

    plan = plan or build_plan(exp, exp.root, missing_inputs="skip")
    summary = plan.summary()
    done = summary["total"] - summary["run"]
    frames = {name: results(exp, name, plan=plan) for name in plan.steps}
    p = _Page()
    answer: Answer | None = None
    problem = None
    try:
        answer = headline(exp, plan, frames=frames)
    except ShoalError as exc:
        problem = str(exc)
    if answer is not None or problem:
        _headline(p, exp, answer, problem)
    _curves(p, exp, plan, frames, answer)
    p.section("Tasks")
    counts = [{"step": n, "total": len(f), **state_counts(list(f["status"]))}
              for n, f in frames.items()]
    table = pd.DataFrame(counts)
    shown = ["step", "total", *[c for c in STATES if c == "done" or table[c].any()]]
    p.add(page.table(table[shown]) + "<p class='muted'>States: see the guide's "
          "“Task states”; columns that are 0 for every step are left out.</p>")
    p.section("Durations")
    p.add(page.table(_durations(frames)))
    p.add(_failures(plan.root, p))
    plots = 0
    for name, frame in frames.items():
        plots = _step(p, exp, plan, name, frame, answer, plots, all_plots)
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>shoal report: "
            f"{esc(exp.name)}</title><style>{page.CSS}</style></head><body>"
            f"<h1>{esc(exp.name)}</h1><p class='muted'>{done:,} of {summary['total']:,} "
            f"tasks done · root {esc(str(plan.root))} · "
            f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>")
    return "\n".join([head, page.toc(p.sections), *p.parts, page.SCRIPT, "</body></html>"])


def _info(exp: Experiment, metric: str) -> MetricInfo:
    return exp.metrics.get(metric) or MetricInfo()


def _headline(p: _Page, exp: Experiment, a: Answer | None, problem: str | None) -> None:
    p.section("Headline")
    if a is None:
        p.add(f"<p class='fail'>The question cannot be answered: {esc(problem or '')}</p>")
        return
    q = a.question
    ask = (f"Does <b>{esc(a.info.label or q.metric)}</b> (step {esc(q.step)}) change with "
           f"<b>{esc(q.x)}</b>")
    ask += (f", against {esc(q.x)}={esc(str(q.baseline))}?" if q.baseline is not None
            else "?")
    p.add(f"<p>{ask}</p>")
    if a.sentences:
        p.add("<div class='answer'><ul>" + "".join(f"<li>{esc(s)}</li>" for s in a.sentences)
              + "</ul></div>")
    if a.table["n"].sum() == 0:
        p.add("<p class='muted'>No task of this step is done yet.</p>")
        return
    p.add(figures.headline(a))
    p.add(f"<p class='muted'>n counts {esc(a.units)}. Method: {esc(a.method)}.</p>")
    p.add(page.table(a.table))


def _curves(p: _Page, exp: Experiment, plan: Plan, frames: dict[str, pd.DataFrame],
            a: Answer | None) -> None:
    first = True
    for name, frame in frames.items():
        done = frame[frame["status"] == "done"]
        if not any((Path(out) / HISTORY).exists() for out in done["out"]):
            continue  # (stops at the first task that has one)
        dims = plan.steps[name].dims
        hist = read_histories(frame, dims)
        metrics = curve_metrics(hist, dims)[:MAX_CURVES]
        if not metrics:
            continue
        if first:
            p.section("Learning curves")
            first = False
        q = a.question if a is not None else None
        by = q.x if q is not None and q.x in dims else None
        reps = [d for d in (q.replicates if q else ()) if d in dims]
        units = [d for d in dims if d != by and d not in reps] if reps else []
        what = (" × ".join(units) + "s" if units else "tasks") + (
            f" (each the mean of its {' × '.join(reps)}s)" if units else "")
        p.section(f"{name}: learning curves", depth=2)
        for m in metrics:
            band = bands(hist, m, by, units)
            p.add(figures.curves(name, m, band, by, x_of(hist, m), _info(exp, m), what))


def _durations(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for name, f in frames.items():
        d = f.loc[f["status"] == "done", "duration"].dropna().astype(float)
        rows.append({"step": name, "done": len(d),
                     "mean_s": d.mean() if len(d) else None,
                     "median_s": d.median() if len(d) else None,
                     "p90_s": d.quantile(0.9) if len(d) else None,
                     "max_s": d.max() if len(d) else None,
                     "total_h": d.sum() / 3600 if len(d) else None})
    return pd.DataFrame(rows)


def _plot_dims(frame: pd.DataFrame, dims: list[str], reps: set[str], all_plots: bool,
               ) -> list[str]:
    out = []
    for d in dims:
        n = frame[d].nunique()
        if n > MAX_CATEGORIES or (not all_plots and (n < 2 or d in reps)):
            continue
        out.append(d)
    return out


def _step(p: _Page, exp: Experiment, plan: Plan, name: str, frame: pd.DataFrame,
          a: Answer | None, plots: int, all_plots: bool) -> int:
    dims = list(plan.steps[name].dims)
    done = frame[frame["status"] == "done"]
    metrics = metric_columns(frame, dims)
    if not all_plots:
        metrics = [m for m in metrics if done[m].nunique(dropna=True) > 1]
    if not metrics or done.empty:
        return plots
    q = a.question if a is not None else None
    reps = {d for d in dims if d in SEED_NAMES} | set(q.replicates if q else ())
    p.section(f"{name}: metrics")
    if not dims:
        p.add(page.table(frame[metrics]))
        return plots
    x = q.x if q is not None and q.x in dims and done[q.x].nunique() <= 10 else None
    chosen = _plot_dims(done, dims, reps, all_plots)
    # (with a question, the other steps' metrics are tables: the page answers it first)
    drawn = chosen if all_plots or q is None or q.step == name else []
    for d in drawn:
        if not all_plots and done.groupby(d).size().max() <= 1:
            continue  # (a box of one value per level: the table says it)
        for m in metrics:
            if plots >= MAX_PLOTS:
                break
            vals = done[[*dict.fromkeys([d, *([x] if x else []), m])]].dropna()
            if vals.empty:
                continue
            if x is not None and d != x:
                p.add(figures.interaction(vals, d, x, m, name, _info(exp, m)))
            else:
                p.add(figures.boxes(vals, d, m, name, _info(exp, m)))
            plots += 1
    for d in chosen:
        by = [x, d] if x is not None and d != x else [d]
        if done[by].drop_duplicates().shape[0] > MAX_CATEGORIES * 3:
            continue
        p.section(f"{name}: summary by {' and '.join(by)}", depth=2)
        rest = [k for k in dims if k not in by]
        p.add(f"<p class='muted'>over {esc(' × '.join(rest) or 'nothing')} (n tasks per row)"
              "</p>" + page.table(summarise(frame, by, metrics)))
    return plots


def _failures(root: Path, p: _Page) -> str:
    with Store.open(root) as store:
        failed = list(store.records(status="failed"))
    title = f"Failures ({len(failed)})" if failed else "Failures"
    p.section(title, cls="fail" if failed else "")
    if not failed:
        return "<p>none</p>"
    out = []
    for r in failed[:50]:
        out.append(f"<h4 class='fail'>{esc(r.label)}</h4><p>{esc(r.error or '')}</p>")
        if r.log_tail:
            out.append(f"<pre>{esc(r.log_tail)}</pre>")
    if len(failed) > 50:
        out.append(f"<p>... and {len(failed) - 50} more (shoal status)</p>")
    return "\n".join(out)


def write_report(exp: Experiment, path: Path, all_plots: bool = False) -> Path:
    """Write the report to ``path``."""
    path.write_text(build_report(exp, all_plots=all_plots), encoding="utf-8")
    return path
