"""Results: one table of params × metrics per step, and summaries across seeds.

Everything is read from the store (one query per step), not by opening every result file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError
from shoal.plan.build import Plan, build_plan
from shoal.results.states import STATES, task_states
from shoal.results.stats import t_ppf
from shoal.state.lock import RootLock
from shoal.state.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from shoal.spec.experiment import Experiment

#: Columns every results table has after the parameters (metrics follow).
BASE_COLUMNS = ("status", "attempts", "duration", "started", "ended", "host", "out")
STATS = ("n", "mean", "std", "sem", "ci_low", "ci_high", "median", "min", "max")


def default_step(plan: Plan) -> str:
    """The step a results table shows by default: the last non-gather step with the most
    dimensions (the per-training table, e.g. ``evaluate``)."""
    best = None
    for sp in plan.steps.values():
        if sp.step.is_gather:
            continue
        if best is None or len(sp.dims) >= len(best.dims):
            best = sp
    return (best or list(plan.steps.values())[-1]).name


def results(exp: Experiment, step: str | None = None, plan: Plan | None = None) -> pd.DataFrame:
    """One row per task of ``step``: params, status, attempts, timings, host, metrics, out."""
    import pandas as pd

    plan = plan or build_plan(exp, exp.root, missing_inputs="skip")
    name = step or default_step(plan)
    if name not in plan.steps:
        raise ShoalError(f"unknown step '{name}' (steps: {', '.join(plan.steps)})")
    sp = plan.steps[name]
    with Store.open(plan.root) as store:
        rows = {
            r[0]: r[1:]
            for r in store._query(
                "SELECT key, status, attempts, started, ended, duration, host, metrics "
                "FROM tasks WHERE step=?", (name,),
            )
        }
    n = len(sp)
    attempts: list[Any] = [None] * n
    started: list[Any] = [None] * n
    ended: list[Any] = [None] * n
    duration: list[Any] = [None] * n
    host: list[Any] = [None] * n
    metric_text: list[str] = ["{}"] * n
    base = f"{plan.root}/{name}"
    live = RootLock(plan.root).held_by_other()  # (a dead controller's "running": interrupted)
    status = task_states(sp, {k: r[0] for k, r in rows.items()}, live)
    for i, key in enumerate(sp.keys):
        row = rows.get(key)
        adopted = sp.adopted.get(i)
        if adopted is not None:
            row = ("done", adopted.get("attempt"), adopted.get("started"), adopted.get("ended"),
                   adopted.get("duration"), adopted.get("host"),
                   json.dumps(adopted.get("metrics") or {}))
        if row is not None:
            attempts[i], started[i], ended[i], duration[i], host[i] = row[1:6]
            if row[6] and row[0] == "done":
                metric_text[i] = row[6]
    frame = pd.DataFrame({d: [p[k] for p in sp.params] for k, d in enumerate(sp.dims)})
    frame["status"] = pd.Categorical(status, categories=list(STATES))
    frame["attempts"] = pd.array(attempts, dtype="Int64")
    frame["duration"] = pd.array(duration, dtype="Float64").astype("float64")
    frame["started"] = pd.to_datetime(pd.Series(started, dtype="float64"), unit="s", utc=True)
    frame["ended"] = pd.to_datetime(pd.Series(ended, dtype="float64"), unit="s", utc=True)
    frame["host"] = pd.array(host, dtype="string")
    frame["out"] = [f"{base}/{k}" if k else base for k in sp.keys]
    metrics = json.loads("[" + ",".join(metric_text) + "]")  # one parse, not one per row
    mframe = pd.DataFrame.from_records(metrics, index=frame.index)
    for col in mframe.columns:
        target = col if col not in frame.columns else f"metric_{col}"
        frame[target] = mframe[col]
    return frame


def metric_columns(frame: pd.DataFrame, dims: Sequence[str]) -> list[str]:
    """The numeric metric columns of a results table."""
    import pandas as pd

    skip = set(dims) | set(BASE_COLUMNS)
    api = pd.api.types
    return [c for c in frame.columns if c not in skip
            and api.is_numeric_dtype(frame[c]) and not api.is_bool_dtype(frame[c])]


def summarise(
    frame: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
    level: float = 0.95,
) -> pd.DataFrame:
    """Per group of ``by`` and per metric: n, mean, std, sem, t-based CI, median, min, max —
    over the *done* tasks — with the group's count of missing and failed tasks beside them,
    so a summary never silently averages over holes."""
    import numpy as np
    import pandas as pd

    key = list(by)
    groups = frame.groupby(key, sort=True, observed=True) if key else [((), frame)]
    out: list[dict[str, Any]] = []
    for gkey, g in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        done = g[g["status"] == "done"]
        failed = int((g["status"] == "failed").sum())
        missing = int(len(g) - len(done) - failed)
        for m in metrics:
            vals = pd.to_numeric(done[m], errors="coerce").dropna().astype(float)
            n = len(vals)
            row: dict[str, Any] = dict(zip(key, gkey))
            row["metric"] = m
            with np.errstate(all="ignore"):  # (inf among the values: nan, not a warning)
                row.update(_describe(vals.to_numpy(), level))
            row["missing"] = missing + (len(done) - n)
            row["failed"] = failed
            out.append(row)
    cols = [*key, "metric", *STATS, "missing", "failed"]
    return pd.DataFrame(out, columns=cols)


def _describe(vals: Any, level: float) -> dict[str, float]:
    n = len(vals)
    nan = math.nan
    if n == 0:
        return dict.fromkeys(STATS, nan) | {"n": 0}
    mean = float(vals.mean())
    std = float(vals.std(ddof=1)) if n > 1 else nan
    sem = std / math.sqrt(n) if n > 1 else nan
    half = t_ppf(0.5 + level / 2.0, n - 1) * sem if n > 1 else nan
    return {
        "n": n, "mean": mean, "std": std, "sem": sem,
        "ci_low": mean - half, "ci_high": mean + half,
        "median": float(_median(vals)), "min": float(vals.min()), "max": float(vals.max()),
    }


def _median(vals: Any) -> float:
    import numpy as np

    return float(np.median(vals))


def summary(
    exp: Experiment,
    step: str | None = None,
    by: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
    level: float = 0.95,
    plan: Plan | None = None,
) -> pd.DataFrame:
    """``results(step)`` grouped by ``by`` and summarised over the other dimensions."""
    if not 0 < level < 1:
        pct = f" ({level:g} %: --level {level / 100:g})" if 1 < level < 100 else ""
        raise ShoalError(f"--level {level:g}: the confidence level is a fraction between 0 "
                         f"and 1{pct}, e.g. --level 0.95")
    import pandas as pd

    plan = plan or build_plan(exp, exp.root, missing_inputs="skip")
    frame = results(exp, step, plan=plan)
    name = step or default_step(plan)
    dims = plan.steps[name].dims
    by = list(dict.fromkeys(by))  # (--by a a: one column)
    for d in by:
        if d not in dims:
            raise ShoalError(
                f"--by {d}: step '{name}' has no dimension '{d}' (it has: "
                f"{', '.join(dims) or 'none'})"
            )
    available = metric_columns(frame, dims)
    chosen = list(metrics) if metrics else available
    # a metric named like a dimension is in the table as metric_NAME (NAME: the parameter)
    chosen = [f"metric_{m}" if m in dims and f"metric_{m}" in frame.columns else m
              for m in chosen]
    for m in chosen:
        if m in dims:
            raise ShoalError(f"--metric {m}: '{m}' is a dimension of step '{name}', not a "
                             f"metric (metrics: {', '.join(available) or 'none yet'}); "
                             f"to group by it: --by {m}")
        if m not in frame.columns:
            raise ShoalError(
                f"--metric {m}: step '{name}' has no metric '{m}' "
                f"(metrics: {', '.join(available) or 'none yet'})"
            )
        if m not in available:
            given = frame[m].dropna()
            if len(given) and pd.to_numeric(given, errors="coerce").isna().all():
                raise ShoalError(
                    f"--metric {m}: the values of '{m}' are not numbers (e.g. "
                    f"{given.iloc[0]!r}), so they cannot be summarised (numeric metrics: "
                    f"{', '.join(available) or 'none'}); see them with --format csv")
    if not chosen:
        raise ShoalError(f"step '{name}' has no numeric metrics to summarise yet; see its "
                         f"table without --by/--summary, or choose --step")
    out = summarise(frame, by, chosen, level)
    # (what each row pools: never silently; --replicates averages within blocks instead)
    out.insert(len(by), "over", " × ".join(d for d in dims if d not in by) or "-")
    return out


def write_table(frame: pd.DataFrame, fmt: str, path: Path | None) -> str | None:
    """Write ``frame`` as csv/parquet/json (to ``path``), or return it as text."""
    if fmt == "parquet":
        if path is None:
            raise ShoalError("--format parquet needs -o FILE")
        try:
            frame.to_parquet(path, index=False)
        except ImportError:
            raise ShoalError(
                "--format parquet needs pyarrow: pip install pyarrow (or shoal[parquet])"
            ) from None
        return None
    if fmt == "csv":
        text = frame.to_csv(index=False)
    elif fmt == "json":
        text = _json_records(frame)
    else:
        shown = frame.drop(columns=[c for c in ("out",) if c in frame.columns])
        for col in ("started", "ended"):
            if col in shown.columns:
                shown[col] = shown[col].dt.strftime("%Y-%m-%d %H:%M:%S")
        with _pd_options():
            text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    if path is not None:
        Path(path).write_text(text + ("" if text.endswith("\n") else "\n"))
        return None
    return text


def json_value(v: Any) -> Any:
    """One cell as JSON takes it: numbers exact (numpy scalars as Python's), times as ISO
    8601, missing values (None, NaN, NA, NaT, inf) as null."""
    import math

    import pandas as pd

    if v is None or v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    item = getattr(v, "item", None)  # numpy scalars
    if callable(item) and not isinstance(v, (str, bytes)):
        v = item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as JSON-able dicts (:func:`json_value` per cell)."""
    return [{str(k): json_value(v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _json_records(frame: pd.DataFrame) -> str:
    """The rows as a JSON list of objects, numbers exact (Python's shortest round-trip
    repr; pandas' to_json keeps 10 significant digits: 1e-12 became 0.0), times as ISO
    8601, missing values (NaN, NA, NaT) as null."""
    return json.dumps(json_rows(frame), default=str)


class _pd_options:
    def __enter__(self) -> None:
        import pandas as pd

        self.ctx = pd.option_context("display.width", 200, "display.max_columns", 50)
        self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.ctx.__exit__(*exc)
