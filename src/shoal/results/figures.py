"""The report's figures (matplotlib, Agg): the headline (inline SVG with hover values), learning
curves, and metric plots. Each returns an HTML fragment that needs no network."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import TYPE_CHECKING, Any

from shoal.spec.question import MetricInfo

if TYPE_CHECKING:
    import pandas as pd

    from shoal.results.compare import Answer

WIDE = (10.5, 3.6)
MAX_POINTS = 2000  # points drawn over a box plot (a sample beyond that)
COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b",
          "#9d755d", "#bab0ac", "#ff9da6")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.tight_layout()  # (not bbox_inches="tight": that draws the figure twice)
    fig.savefig(buf, format="png", dpi=96)
    _plt().close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def svg(fig: Any, titles: dict[str, str]) -> str:
    """The figure as inline SVG; ``titles``: hover text per artist gid."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    text = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg class="fig" \1', text,
                  count=1)
    for gid, title in titles.items():
        text = text.replace(f'<g id="{gid}">',
                            f'<g id="{gid}"><title>{html.escape(title)}</title>', 1)
    return text


def _num(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def headline(a: Answer) -> str:
    """Left: the metric against x, mean ± CI per level (a line per split); right (with a
    baseline): each level's paired difference from the baseline with its CI."""
    plt = _plt()
    q, t = a.question, a.table
    paired = q.baseline is not None and "diff" in t.columns
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=WIDE if paired else (7, 3.6),
                             squeeze=False)
    levels = list(dict.fromkeys(t[q.x]))
    pos = {v: k for k, v in enumerate(levels)}
    groups = [(None, t)] if not q.split else list(t.groupby(q.split, sort=False))
    titles: dict[str, str] = {}
    ylabel = a.info.axis(q.metric)
    for g, (s, sub) in enumerate(groups):
        color = COLORS[g % len(COLORS)]
        xs = [pos[v] + (g - (len(groups) - 1) / 2) * 0.08 for v in sub[q.x]]
        label = f"{q.split}={s}" if q.split else None
        for ax, (mid, lo, hi) in zip(axes[0], [("mean", "ci_low", "ci_high"),
                                               ("diff", "diff_low", "diff_high")]):
            ys = sub[mid].to_numpy(dtype=float)
            err = [ys - sub[lo].to_numpy(dtype=float), sub[hi].to_numpy(dtype=float) - ys]
            ax.errorbar(xs, ys, yerr=err, color=color, marker="o", capsize=3, lw=1.4,
                        label=label)
            for k, (_, row) in enumerate(sub.iterrows()):
                if math.isnan(float(row[mid])):
                    continue
                gid = f"hv-{mid}-{g}-{k}"
                ax.plot([xs[k]], [row[mid]], "o", ms=9, alpha=0.0, gid=gid)
                where = f"{q.split}={s}, " if q.split else ""
                text = (f"{where}{q.x}={row[q.x]}: {_num(row[mid])} "
                        f"[{_num(row[lo])}, {_num(row[hi])}]")
                if mid == "mean":
                    text += f", n={row['n']}"
                else:
                    text += (f", p={_num(row['p_t_holm'])} (t, Holm), "
                             f"{row['better']}/{row['pairs']} improve")
                titles[gid] = text
            if not paired:
                break
    ax = axes[0][0]
    ax.set_ylabel(ylabel)
    ax.set_title(f"{q.metric} by {q.x}: mean ± CI over {a.units}", fontsize=9)
    if paired:
        ax2 = axes[0][1]
        ax2.axhline(0, color="#888", lw=1, ls="--")
        ax2.set_ylabel(f"difference from {q.x}={q.baseline}")
        better = "higher is better" if q.higher_is_better else "lower is better"
        ax2.set_title(f"paired difference from {q.x}={q.baseline} ({better})", fontsize=9)
    for ax in axes[0]:
        ax.set_xticks(range(len(levels)), [str(v) for v in levels])
        ax.set_xlabel(q.x)
        ax.grid(axis="y", alpha=0.3)
    if q.split:
        axes[0][0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return svg(fig, titles)


def curves(step: str, metric: str, band: pd.DataFrame, by: str | None, x: str,
           info: MetricInfo, units: str) -> str:
    """Mean ± CI bands of one history value against x, a band per level of ``by``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=WIDE)
    groups = [(None, band)] if by is None else list(band.groupby(by, sort=False))
    for g, (level, sub) in enumerate(groups):
        color = COLORS[g % len(COLORS)]
        ax.plot(sub[x], sub["mean"], color=color, lw=1.5,
                label=f"{by}={level}" if by else None)
        ax.fill_between(sub[x], sub["low"], sub["high"], color=color, alpha=0.18, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(info.axis(metric))
    ax.set_title(f"{step}: {metric}, mean ± 95% CI over {units}", fontsize=9)
    ax.grid(alpha=0.3)
    if by is not None:
        ax.legend(fontsize=8, frameon=False, ncol=min(6, len(groups)))
    return png(fig, f"{step}: {metric} learning curve")


def boxes(vals: pd.DataFrame, dim: str, metric: str, step: str, info: MetricInfo) -> str:
    """A metric against one dimension: a box per level with the tasks' points."""
    import numpy as np

    plt = _plt()
    cats = sorted(vals[dim].unique(), key=lambda v: (isinstance(v, str), v))
    groups = [vals.loc[vals[dim] == c, metric].astype(float).to_numpy() for c in cats]
    fig, ax = plt.subplots(figsize=WIDE)
    ax.boxplot(groups, showfliers=False)
    rng = np.random.default_rng(0)
    total = sum(len(g) for g in groups)
    share = min(1.0, MAX_POINTS / max(total, 1))  # (the boxes use every value)
    for k, g in enumerate(groups, start=1):
        if share < 1.0:
            g = rng.choice(g, max(1, round(len(g) * share)), replace=False)
        ax.plot(k + rng.uniform(-0.15, 0.15, len(g)), g, ".", alpha=0.5, color="#e45756",
                markersize=4)
    ax.set_xticks(range(1, len(cats) + 1), [str(c) for c in cats],
                  rotation=45 if len(cats) > 12 else 0, fontsize=8)
    ax.set_xlabel(dim)
    ax.set_ylabel(info.axis(metric))
    shown = "each point a task" if share >= 1.0 else (
        f"points: {round(total * share):,} of {total:,} tasks at random")
    ax.set_title(f"{step}: {metric} by {dim} ({shown})", fontsize=9)
    return png(fig, f"{step}: {metric} by {dim}")


def interaction(vals: pd.DataFrame, dim: str, x: str, metric: str, step: str,
                info: MetricInfo) -> str:
    """A metric against ``dim`` with a line per level of the headline's ``x`` (the mean over
    the rest): a plot by site that does not pool the factors."""
    plt = _plt()
    cats = sorted(vals[dim].unique(), key=lambda v: (isinstance(v, str), v))
    pos = {c: k for k, c in enumerate(cats)}
    means = vals.groupby([x, dim], observed=True)[metric].mean().reset_index()
    fig, ax = plt.subplots(figsize=WIDE)
    for g, (level, sub) in enumerate(means.groupby(x, sort=True)):
        ax.plot([pos[c] for c in sub[dim]], sub[metric], "o-", ms=4, lw=1,
                color=COLORS[g % len(COLORS)], label=f"{x}={level}")
    ax.set_xticks(range(len(cats)), [str(c) for c in cats],
                  rotation=45 if len(cats) > 12 else 0, fontsize=8)
    ax.set_xlabel(dim)
    ax.set_ylabel(info.axis(metric))
    ax.set_title(f"{step}: {metric} by {dim}, a line per {x} (mean over the rest)",
                 fontsize=9)
    ax.legend(fontsize=8, frameon=False, ncol=min(6, means[x].nunique()))
    ax.grid(axis="y", alpha=0.3)
    return png(fig, f"{step}: {metric} by {dim} and {x}")
