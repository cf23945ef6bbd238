"""``shoal export EXP --to mlflow|tensorboard DEST``: the results into the trackers users
already have. Per step and task: the parameters, the final metrics, the history
(``ctx.log``) as metric steps, status and duration, the task folder.

Only new or changed tasks go out again: ``<root>/.shoal/exports.json`` remembers, per
destination, what each task was when exported (its status, end and attempts). A task that
ran again replaces its earlier export (MLflow: the old run is deleted; TensorBoard: its folder
is written anew).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shoal.errors import ShoalError
from shoal.results.history import read_histories
from shoal.results.table import json_value, metric_columns, results
from shoal.state.resultfile import write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

TARGETS = ("mlflow", "tensorboard")


@dataclass
class TaskRow:
    """One task as exported."""

    step: str
    key: str
    label: str
    params: dict[str, Any]
    metrics: dict[str, float]
    history: pd.DataFrame | None  # x column + values (None: no history)
    x: str | None
    status: str
    started: float | None
    ended: float | None
    duration: float | None
    attempts: int | None
    folder: str


class Writer(Protocol):
    def step(self, name: str, dims: list[str], metrics: list[str], old: Any) -> Any:
        """Make (or find) the step's parent; returns what to remember of it."""

    def task(self, row: TaskRow, parent: Any, old: Any) -> Any:
        """Export one task (replacing ``old``); returns what to remember of it."""

    def close(self) -> None: ...


@dataclass
class ExportReport:
    exported: dict[str, int] = field(default_factory=dict)  # step -> tasks exported now
    unchanged: int = 0
    dest: str = ""


def export(exp: Any, to: str, dest: str, steps: list[str] | None = None,
           plan: Any = None) -> ExportReport:
    """Export the done and failed tasks of ``steps`` (default: every step) to ``dest``."""
    from shoal.plan.build import build_plan

    if to not in TARGETS:
        raise ShoalError(f"--to {to}: give one of {', '.join(TARGETS)}")
    plan = plan or build_plan(exp, exp.root, missing_inputs="skip")
    names = steps or list(plan.steps)
    for s in names:
        if s not in plan.steps:
            raise ShoalError(f"--step {s}: no such step (steps: {', '.join(plan.steps)})")
    writer: Writer
    if to == "mlflow":
        from shoal.results.export_mlflow import MlflowWriter

        writer = MlflowWriter(dest, exp.name)
        where = dest if "://" in dest or ":" in dest.split("/")[0] else str(Path(dest).resolve())
    else:
        from shoal.results.export_tensorboard import TensorBoardWriter

        writer = TensorBoardWriter(Path(dest))
        where = str(Path(dest).resolve())
    ledger_path = Path(plan.root) / ".shoal" / "exports.json"
    ledger = _load(ledger_path)
    book = ledger.setdefault(f"{to}:{where}", {"steps": {}, "tasks": {}})
    report = ExportReport(dest=where)

    def save() -> None:  # (what went out is remembered even if the tracker fails later)
        write_json_atomic(ledger_path, ledger)

    try:
        for name in names:
            _export_step(exp, plan, name, writer, book, report, save)
    finally:
        save()
        writer.close()
    return report


def _export_step(exp: Any, plan: Any, name: str, writer: Writer, book: dict[str, Any],
                 report: ExportReport, save: Any) -> None:
    import pandas as pd

    sp = plan.steps[name]
    dims = list(sp.dims)
    frame = results(exp, name, plan=plan)
    frame = frame[frame["status"].isin(["done", "failed"])]
    stamps = {i: f"{r.status}|{r.ended}|{r.attempts}" for i, r in zip(frame.index,
                                                                        frame.itertuples())}
    keys = {i: f"{name}/{sp.keys[i]}" for i in frame.index}
    todo = [i for i in frame.index if book["tasks"].get(keys[i], {}).get("stamp") != stamps[i]]
    report.unchanged += len(frame) - len(todo)
    if not todo:
        return
    metrics = metric_columns(frame, dims)
    parent = writer.step(name, dims, metrics, book["steps"].get(name))
    book["steps"][name] = parent
    sub = frame.loc[todo]
    hist = read_histories(sub, dims)
    x = hist.attrs.get("x") if len(hist) else None
    by_task = dict(iter(hist.groupby("_task"))) if len(hist) else {}
    for i in todo:
        r = frame.loc[i]
        h = by_task.get(i)
        row = TaskRow(
            step=name, key=sp.keys[i], label=plan.task_label(sp, i),
            params={d: json_value(r[d]) for d in dims},
            metrics={m: float(r[m]) for m in metrics if pd.notna(r[m])},
            history=None if h is None else h.drop(columns=[*dims, "_task"]), x=x,
            status=str(r["status"]), started=_ts(r["started"]), ended=_ts(r["ended"]),
            duration=None if pd.isna(r["duration"]) else float(r["duration"]),
            attempts=None if pd.isna(r["attempts"]) else int(r["attempts"]),
            folder=str(r["out"]))
        got = writer.task(row, parent, book["tasks"].get(keys[i], {}).get("ref"))
        book["tasks"][keys[i]] = {"stamp": stamps[i], "ref": got}
        report.exported[name] = report.exported.get(name, 0) + 1
        if report.exported[name] % 200 == 0:
            save()


def _ts(v: Any) -> float | None:
    import pandas as pd

    return None if v is None or pd.isna(v) else float(pd.Timestamp(v).timestamp())


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            got = json.load(fh)
        return got if isinstance(got, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        os.replace(path, str(path) + ".bad")  # (kept for a look; everything goes out again)
        return {}
