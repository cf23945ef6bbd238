"""Histories (``ctx.log(epoch=..., loss=...)``) read back as one long table, and learning
curves: mean ± CI bands per level of a dimension, across replicates.

A history's x axis is its first key among ``epoch``, ``step``, ``iteration``, ``iter`` (else
the record's number); a value logged again for the same x (a task resumed from a checkpoint
repeats epochs) replaces the earlier one.
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
    hist.insert(0, "_task", owners)
    x = next((k for k in X_KEYS if k in hist.columns), None)
    if x is None:
        x = "record"
        hist[x] = hist.groupby("_task").cumcount()
    hist = hist.drop_duplicates(["_task", x], keep="last")
    for d in reversed(list(dims)):
        hist.insert(0, d, frame.loc[hist["_task"], d].to_numpy())
    hist.attrs["x"] = x
    return hist.reset_index(drop=True)


def curve_metrics(hist: pd.DataFrame, dims: Sequence[str]) -> list[str]:
    """The numeric, non-constant value columns of a history table."""
    import pandas as pd

    skip = {*dims, "_task", hist.attrs.get("x")}
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

    x = hist.attrs["x"]
    keys = [k for k in ([by] if by else []) + [x]]
    data = hist[[*dict.fromkeys([*keys, *units, "_task"]), metric]].dropna(subset=[metric])
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
