"""Histories (``ctx.log(epoch=..., loss=...)``) read back as one long table, and learning
curves: mean ± CI bands per level of a dimension, across replicates.

A history's x axis is the finest of ``epoch``, ``step``, ``iteration``, ``iter`` that it has
(else the record's number); per task and x, each value is the last one logged (a task
resumed from a checkpoint repeats epochs; values logged in separate calls at one x merge).
Records without an x value are not part of the curves. A logged name that is also a
dimension of the step is read as ``log_NAME``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.state.resultfile import HISTORY

if TYPE_CHECKING:
    import pandas as pd

X_KEYS = ("epoch", "step", "iteration", "iter")


def read_histories(frame: pd.DataFrame, dims: Sequence[str]) -> pd.DataFrame:
    """The histories of the done tasks of a results table ``frame``: one row per record,
    with the task's dimensions, the x column (``frame.attrs["x"]``) and the values."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    owners: list[int] = []
    done = frame.index[frame["status"] == "done"]
    for i in done:
        try:
            with open(Path(frame.at[i, "out"]) / HISTORY, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:  # (a line cut by a crash)
                continue
            if isinstance(rec, dict) and "_fingerprint" not in rec:
                records.append(rec)
                owners.append(i)
    if not records:
        return pd.DataFrame(columns=[*dims])
    hist = pd.DataFrame.from_records(records)
    hist = hist.rename(columns={d: f"log_{d}" for d in dims if d in hist.columns})
    hist.insert(0, "_task", owners)
    keys = [k for k in X_KEYS if k in hist.columns]
    if not keys:
        keys = ["record"]
        hist["record"] = hist.groupby("_task").cumcount()
    # one row per task and x values: the last value of each column logged there (a resumed
    # task's repeated epochs replace the earlier; values logged in separate calls merge)
    hist = hist.groupby(["_task", *keys], sort=False, dropna=False).last().reset_index()
    for d in reversed(list(dims)):
        hist.insert(0, d, frame.loc[hist["_task"], d].to_numpy())
    hist.attrs["x"] = finest(hist, keys)
    return hist.reset_index(drop=True)


def finest(hist: pd.DataFrame, keys: Sequence[str] | None = None) -> str:
    """Of the x keys ``hist`` has, the one with the most values (``step`` over ``epoch``
    when both are logged)."""
    keys = [k for k in (keys or X_KEYS) if k in hist.columns] or ["record"]
    return max(keys, key=lambda k: (hist[k].nunique(), -keys.index(k)))


def x_of(hist: pd.DataFrame, metric: str) -> str:
    """The x axis of one value: the finest key logged with it (an epoch-level ``val_loss``
    beside step-level ``batch_loss`` is per epoch)."""
    rows = hist[hist[metric].notna()]
    keys = [k for k in (*X_KEYS, "record") if k in rows.columns and rows[k].notna().any()]
    return finest(rows, keys) if keys else hist.attrs.get("x", "record")


def curve_metrics(hist: pd.DataFrame, dims: Sequence[str]) -> list[str]:
    """The numeric, non-constant value columns of a history table."""
    import pandas as pd

    skip = {*dims, "_task", *X_KEYS, "record"}
    return [c for c in hist.columns if c not in skip
            and pd.api.types.is_numeric_dtype(hist[c]) and not pd.api.types.is_bool_dtype(
                hist[c]) and hist[c].nunique(dropna=True) > 1]


def bands(hist: pd.DataFrame, metric: str, by: str | None, units: Sequence[str],
          level: float = 0.95) -> pd.DataFrame:
    """Per level of ``by`` (None: one band) and x: n, mean and the t-interval of
    ``metric`` over ``units`` (each unit's value: the mean over the rest, e.g. its seeds);
    no units: over the tasks."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    x = x_of(hist, metric)
    keys = [by, x] if by else [x]
    data = hist[[*dict.fromkeys([*keys, *units, "_task"]), metric]].dropna(
        subset=[metric, x])
    per_unit = data.groupby([*keys, *units] if units else [*keys, "_task"],
                            observed=True)[metric].mean()
    g = per_unit.groupby(level=list(range(len(keys))), observed=True)
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "std": g.std(ddof=1)})
    n = out["n"].to_numpy()
    with np.errstate(all="ignore"):
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * out["std"] / np.sqrt(n)
    out["low"] = np.where(n > 1, out["mean"] - half, np.nan)
    out["high"] = np.where(n > 1, out["mean"] + half, np.nan)
    return out.reset_index()


def points(history: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """One task's history as ``{value name: [(x, value), ...]}``, each on its own x axis
    (:func:`x_of`), finite numbers only (what a tracker's metric steps take)."""
    import math

    out: dict[str, list[tuple[int, float]]] = {}
    for col in history.columns:
        if col in (*X_KEYS, "record", "_task"):
            continue
        x = x_of(history, col)
        pairs = []
        for xv, v in zip(history[x], history[col]):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            try:
                xi = float(xv)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v) and math.isfinite(xi):
                pairs.append((int(xi), float(v)))
        if pairs:
            out[col] = pairs
    return out
