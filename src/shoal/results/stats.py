"""The statistics of results, from scipy.stats: confidence intervals, paired tests, and the
Holm correction across the levels compared with one baseline."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any


def t_ppf(p: float, df: float) -> float:
    """Student's t quantile (``scipy.stats.t.ppf``)."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def mean_ci(values: Any, level: float = 0.95) -> tuple[int, float, float, float]:
    """``(n, mean, low, high)``: the mean of ``values`` and its t-based confidence interval
    (NaN bounds for fewer than two values)."""
    import numpy as np

    vals = np.asarray(values, dtype=float)
    vals = vals[~np.isnan(vals)]
    n = len(vals)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    mean = float(vals.mean())
    if n < 2:
        return n, mean, math.nan, math.nan
    half = t_ppf(0.5 + level / 2.0, n - 1) * float(vals.std(ddof=1)) / math.sqrt(n)
    return n, mean, mean - half, mean + half


def paired_tests(diffs: Any) -> tuple[float, float]:
    """Two-sided p values of the paired differences ``diffs`` against zero: Student's t
    (``ttest_1samp``, the paired t test) and Wilcoxon's signed-rank test. NaN where a test
    cannot be made (fewer than two differences, all of them zero)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2 or not np.any(d):
        return math.nan, math.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (identical differences: p = 0)
        p_t = float(stats.ttest_1samp(d, 0.0).pvalue)
        try:
            p_w = float(stats.wilcoxon(d).pvalue)
        except ValueError:  # (e.g. every difference zero after ties)
            p_w = math.nan
    return p_t, p_w


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (one family: the levels compared with one
    baseline); NaN stays NaN and is not counted."""
    idx = sorted((p, k) for k, p in enumerate(pvalues) if not math.isnan(p))
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, k) in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p))
        out[k] = running
    return out
