"""The answer to an experiment's question (:mod:`shoal.spec.question`): the metric against
``x`` with mean ± CI over blocks (replicates averaged within each block first), and each
level's paired difference from the baseline with paired t and Wilcoxon signed-rank tests,
Holm-corrected across the levels, and a sentence in words for each.

Blocks are the units: with ``replicates="seed"`` and the blocks ``site``, each site's value
is the mean over its seeds, and n is the number of sites. Without blocks the replicates
themselves are the units. A pair is one block × replicate under a level and under the
baseline; its differences are averaged within the block like the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError
from shoal.results.stats import holm, mean_ci, paired_tests
from shoal.spec.question import MetricInfo, Question, match_level

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("n", "mean", "ci_low", "ci_high", "diff", "diff_low", "diff_high", "p_t",
           "p_t_holm", "p_wilcoxon", "p_wilcoxon_holm", "better", "pairs")


@dataclass
class Answer:
    """The comparison table (one row per level of ``x``, per ``split``) and its words."""

    question: Question
    metric: str  # the column in the results table
    table: pd.DataFrame
    units: str  # what n counts, e.g. "sites (each the mean of 30 seeds)"
    method: str  # how the CI and the tests were made, one line
    sentences: list[str] = field(default_factory=list)
    info: MetricInfo = field(default_factory=MetricInfo)
    level: float = 0.95
    left_out: dict[str, int] = field(default_factory=dict)  # why -> tasks not in the answer


def answer(frame: pd.DataFrame, q: Question, order: list[Any] | None = None,
           level: float = 0.95, info: MetricInfo | None = None) -> Answer:
    """Answer the resolved question ``q`` from a step's results table ``frame``;
    ``order``: the levels of ``x`` in grid order."""
    import numpy as np
    import pandas as pd

    metric = q.metric if q.metric not in (q.x, *q.replicates, *(q.blocks or ())) \
        else f"metric_{q.metric}"
    if metric not in frame.columns:
        raise ShoalError(f"step '{q.step}' has no metric '{q.metric}' yet (shoal results "
                         f"--step {q.step} shows its columns)")
    done = frame[frame["status"] == "done"].copy()
    done[metric] = pd.to_numeric(done[metric], errors="coerce")
    finite = np.isfinite(done[metric].to_numpy(dtype=float))
    left_out = {"done without a finite value": int((~finite).sum()),
                "failed": int((frame["status"] == "failed").sum()),
                "not done yet": int((~frame["status"].isin(["done", "failed"])).sum())}
    done = done[finite]
    blocks, reps = list(q.blocks or ()), list(q.replicates)
    units, averaged = (blocks, reps) if blocks else (reps, [])
    levels = order if order is not None else sorted(done[q.x].unique())
    levels = [v for v in levels if (done[q.x] == v).any()] or levels
    base = None if q.baseline is None else match_level(levels, q.baseline)
    if base is None:  # (a baseline that no done task has: no comparison)
        base = q.baseline
    splits = [None] if q.split is None else list(dict.fromkeys(done[q.split]))
    rows: list[dict[str, Any]] = []
    for s in splits:
        sub = done if s is None else done[done[q.split] == s]
        per_unit = _unit_values(sub, q.x, units, metric)
        paired = base is not None and bool(units)
        wide = sub.pivot_table(index=units + averaged, columns=q.x, values=metric,
                               aggfunc="mean") if paired else None
        first = len(rows)
        for v in levels:
            got = per_unit.get(v)
            n, mean, lo, hi = mean_ci(got if got is not None else [], level)
            row: dict[str, Any] = {**({q.split: s} if q.split else {}), q.x: v, "n": n,
                                   "mean": mean, "ci_low": lo, "ci_high": hi}
            if paired and wide is not None and v != base and v in wide and base in wide:
                d = (wide[v] - wide[base]).dropna()
                du = d.groupby(level=units).mean() if averaged else d
                k, dm, dlo, dhi = mean_ci(du.to_numpy(), level)
                p_t, p_w = paired_tests(du.to_numpy())
                sign = 1 if q.higher_is_better else -1
                row.update(diff=dm, diff_low=dlo, diff_high=dhi, p_t=p_t, p_wilcoxon=p_w,
                           better=int((sign * du.to_numpy() > 0).sum()), pairs=k)
            rows.append(row)
        for col in ("p_t", "p_wilcoxon"):
            ps = [r.get(col, math.nan) for r in rows[first:]]
            for r, p in zip(rows[first:], holm(ps)):
                r[f"{col}_holm"] = p
    lead = [q.split] if q.split else []
    table = pd.DataFrame(rows, columns=[*lead, q.x, *COLUMNS])
    if base is None:  # (no comparison: the level summaries only)
        table = table[[*lead, q.x, *COLUMNS[:4]]]
    else:
        with np.errstate(all="ignore"):
            table["better"] = table["better"].astype("Int64")
            table["pairs"] = table["pairs"].astype("Int64")
    out = Answer(q, metric, table, _units(done, units, averaged),
                 _method(q, units, averaged, level), info=info or MetricInfo(), level=level,
                 left_out={k: n for k, n in left_out.items() if n})
    if base is not None:
        out.sentences = [sentence(out, r) for r in rows if not math.isnan(r.get("diff",
                                                                                 math.nan))]
    if out.left_out:  # (never silently: a method that diverged on some seeds shows here)
        what = "; ".join(f"{n:,} {k}" for k, n in out.left_out.items())
        out.sentences.insert(0, f"Left out of this answer: {what} (of {len(frame):,} tasks "
                                f"of {q.step}); it covers the rest only.")
    return out


def _unit_values(sub: pd.DataFrame, x: str, units: list[str], metric: str) -> dict[Any, Any]:
    """Per level of ``x``: one value per unit (the mean over what is averaged in it)."""
    if units:
        means = sub.groupby([x, *units], observed=True)[metric].mean()
        return {v: g.to_numpy() for v, g in means.groupby(level=0)}
    return {v: g[metric].to_numpy() for v, g in sub.groupby(x, observed=True)}


def _units(done: pd.DataFrame, units: list[str], averaged: list[str]) -> str:
    if not units:
        return "tasks"
    text = f"{units[0]}s" if len(units) == 1 else f"{' × '.join(units)} combinations"
    if averaged:
        k = int(done.groupby(averaged).ngroups) if len(done) else 0
        what = f"{averaged[0]}s" if len(averaged) == 1 else " × ".join(averaged)
        text += f" (each the mean of {k} {what})"
    return text


def _method(q: Question, units: list[str], averaged: list[str], level: float) -> str:
    unit = " × ".join(units) or "task"
    how = f"mean ± {level:.0%} t-interval over {unit}"
    if averaged:
        how += f", {' × '.join(averaged)} averaged within each {unit} first"
    if q.baseline is not None and units:
        how += (f"; each level against {q.x}={q.baseline} paired on "
                f"{' × '.join([*units, *averaged])}: paired t test and Wilcoxon signed-rank "
                f"test over {unit}, Holm-corrected across the levels; a level improves or "
                f"worsens where the Holm-adjusted paired t test gives p < {1 - level:.2g} "
                f"(the intervals shown are not adjusted)")
    return how


def _fmt(v: float) -> str:
    if v == 0 or math.isnan(v):
        return f"{v:g}"
    digits = max(0, 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{min(digits, 6)}f}" if abs(v) < 1e5 else f"{v:.3g}"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else "< 0.001" if p < 0.001 else f"= {p:.2g}"


def sentence(a: Answer, row: dict[str, Any]) -> str:
    """One level against the baseline in words."""
    q = a.question
    name = a.info.label or q.metric
    diff, lo, hi = row["diff"], row["diff_low"], row["diff_high"]
    where = f" ({q.split}={row[q.split]})" if q.split else ""
    unit = (q.blocks or q.replicates or ("tasks",))[0]
    p = row["p_t_holm"]  # (the verdict: the Holm-adjusted paired t test, as printed; the
    # interval shown is the level's own, unadjusted)
    if not math.isnan(p) and p < 1 - a.level and diff != 0:
        gain = diff > 0 if q.higher_is_better else diff < 0
        verb = "improves" if gain else "worsens"
        head = (f"{q.x} {row[q.x]}{where} {verb} {name} by {_fmt(abs(diff))} "
                f"[{_fmt(lo)}, {_fmt(hi)}] over {q.x} {q.baseline}")
    else:
        head = (f"{q.x} {row[q.x]}{where}: no clear difference in {name} from {q.x} "
                f"{q.baseline}: {_fmt(diff)} [{_fmt(lo)}, {_fmt(hi)}]")
    return (f"{head} (paired t p {_p(row['p_t_holm'])}, Wilcoxon p "
            f"{_p(row['p_wilcoxon_holm'])}, Holm); {row['better']} of {row['pairs']} "
            f"{unit}s improve")


def headline(exp: Any, plan: Any = None, question: Question | None = None,
             level: float = 0.95, frames: dict[str, Any] | None = None) -> Answer | None:
    """The answer to ``question`` (default: the experiment's ``exp.question(...)``; None
    when it has none) from its step's results (``frames``: results tables already read,
    by step)."""
    from shoal.plan.build import build_plan
    from shoal.results.table import results

    q = question or exp.headline
    if q is None:
        return None
    exp.validate()
    plan = plan or build_plan(exp, exp.root, missing_inputs="skip")
    if q.step not in plan.steps:
        raise ShoalError(f"question: unknown step '{q.step}' (steps: {', '.join(plan.steps)})")
    values = {d: list(exp.grid.values[d]) for d in exp.grid.dims}
    info = exp.metrics.get(q.metric) or MetricInfo()
    q = q.resolve(plan.steps[q.step].dims, values, info.higher_is_better)
    frame = (frames or {}).get(q.step)
    if frame is None:
        frame = results(exp, q.step, plan=plan)
    return answer(frame, q, values[q.x], level, info)
