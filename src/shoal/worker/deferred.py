"""Tasks submitted before their upstream tasks ran (``shoal run --detach``).

Such a task's spec lists its upstream tasks (folder and expected fingerprint) instead of
their results. Before it runs, the worker reads their result files — the same truth the
controller reads — and fills what the controller would have: ``ctx.input(...)``'s results,
a gather's rows, and the inputs identity (the upstream run ids) recorded with its result.
An upstream task without a current result (it failed, or was cancelled) means the task
does not run: it is recorded *skipped*, and the next ``shoal run`` runs both.
"""

from __future__ import annotations

import time
from typing import Any

from shoal.plan.decide import many_inputs
from shoal.state import resultfile
from shoal.state.status import Outcome, TaskStatus
from shoal.worker.task import outcome, write_failure
from shoal.worker.taskfolder import prepare_folder
from shoal.worker.taskspec import TaskSpec, gather_row


def describe(deps: list[Any], i: int, param_dict: Any, folder: Any) -> list[dict[str, Any]]:
    """The ``upstream`` list of task ``i`` (deps: the step plan's :class:`Dep` s)."""
    out = []
    for d in deps:
        up = d.up
        js = d.idx[i] if d.many else [d.idx[i]]
        out.append({
            "step": up.name, "many": d.many,
            "tasks": [[param_dict(up, j), folder(up, j), up.fps[j]] for j in js],
        })
    return out


def resolve(spec: TaskSpec) -> str | None:
    """Fill ``spec`` from its upstream tasks' result files. Returns None when it may run,
    else why not (an upstream task has no current result)."""
    upstream = spec.upstream or []
    multi = sum(1 for u in upstream if u["many"]) > 1
    needs: dict[str, dict[str, Any]] = {}
    gather: dict[str, list[dict[str, Any]]] | None = None
    parts: list[str] = []
    for u in upstream:
        ids: list[str] = []
        rows: list[dict[str, Any]] = []
        for params, out, fp in u["tasks"]:
            doc = resultfile.read_json(f"{out}/{resultfile.RESULT}")
            if doc is None or doc.get("fingerprint") != fp:
                if u["many"] and spec.allow_missing:
                    ids.append("None")
                    continue
                label = ",".join(f"{k}={v}" for k, v in params.items())
                return (f"upstream {u['step']}[{label}] has no current result "
                        "(it failed or did not run); `shoal run` again runs both")
            ids.append(str(doc.get("run_id")))
            metrics = doc.get("metrics") or {}
            if u["many"]:
                rows.append(gather_row(params, metrics, out, u["step"] if multi else None))
            else:
                needs[u["step"]] = {"params": params, "out": out, "result": metrics}
        if u["many"]:
            gather = gather if gather is not None else {}
            gather[u["step"]] = rows
            parts.append(many_inputs(ids))  # the planner's own digest: see decide
        else:
            parts.append(ids[0])
    spec.needs, spec.gather = needs, gather
    spec.inputs = "|".join(parts) if parts else None
    spec.upstream = None
    return None


def write_skipped(spec: TaskSpec, why: str) -> Outcome:
    """Record that the task did not run for want of an upstream result."""
    error = f"skipped: {why}"
    try:
        prepare_folder(spec.out)
    except OSError:
        return outcome(spec, TaskStatus.SKIPPED, error=error)
    print(f"shoal: {spec.label} skipped: {why}", flush=True)
    return write_failure(spec, TaskStatus.SKIPPED, error, time.time())
