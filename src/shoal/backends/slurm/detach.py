"""After `shoal run --backend slurm --detach`: what its jobs left, and what Slurm still holds.

The controller submits (:mod:`shoal.schedule.detached`): each step's tasks go out as arrays
that depend (``afterany``) on the arrays of the steps they need
(:meth:`SlurmBackend.submit_detached`); a task whose upstream tasks had not run at
submission reads their result files before it starts (:mod:`shoal.worker.deferred`) and is
recorded *skipped* when one is missing. This module is the other half: nothing follows the
jobs: the result files are the truth. ``shoal status`` ingests them
into the store and shows what Slurm still holds; ``shoal run`` again attaches to the jobs
still queued or running (it never submits their tasks twice) and resubmits the rest.

The submission is listed in ``.shoal/slurm/detached.json``: for every array element, the
tasks it runs and their dispatch tokens.
"""

from __future__ import annotations

from pathlib import Path

from shoal.backends.slurm import commands
from shoal.backends.slurm.manifest import load as _load
from shoal.backends.slurm.manifest import manifest_path
from shoal.backends.slurm.manifest import write as _write_manifest
from shoal.plan.build import DONE, Plan
from shoal.state import resultfile
from shoal.state.status import TaskStatus
from shoal.state.store import Store, TaskRecord

# (step, key) -> (job, index, token, fingerprint)
Live = dict[tuple[str, str], tuple[str, int, str, "str | None"]]


def snapshot(root: Path) -> dict[tuple[str, int], str] | None:
    """One ``squeue`` for the detached submission's arrays (None when there is none).
    Take it *before* ingesting, so that pruning never drops an element that ended after
    its files were read."""
    doc = _load(root)
    if not doc:
        return None
    return commands.squeue({name.rsplit("_", 1)[0] for name in doc["elements"]})


def live(root: Path, states: dict[tuple[str, int], str] | None,
         prune: bool = False) -> tuple[Live, dict[str, str]]:
    """The detached tasks whose array element Slurm held at the ``states`` snapshot
    (``(job, index, token, fingerprint)``), and each such element's state (``"queued"`` /
    ``"running"``). ``prune``: forget the elements that had ended."""
    doc = _load(root)
    if not doc or states is None:
        return {}, {}
    elements: dict[str, list[list[str]]] = doc["elements"]
    tasks: Live = {}
    alive: dict[str, str] = {}
    for name, members in elements.items():
        job, index = name.rsplit("_", 1)
        state = commands.STATES.get(states.get((job, int(index)), ""), "ended")
        if state == "ended":
            continue
        alive[name] = state
        for step, key, token, *fp in members:
            tasks[(step, key)] = (job, int(index), token, fp[0] if fp else None)
    if prune:
        if alive:
            doc["elements"] = {n: elements[n] for n in alive}
            _write_manifest(root, doc)
        else:
            manifest_path(root).unlink(missing_ok=True)
    return tasks, alive


def ingest(plan: Plan, store: Store) -> int:
    """Write what the detached tasks left (result files, and error files of this
    submission) into the store; returns the number of records written."""
    records = [TaskRecord.from_result(doc, TaskStatus.DONE)
               for sp in plan.steps.values() for doc in sp.adopted.values()]
    doc = _load(plan.root)
    if doc:
        index = {name: {k: i for i, k in enumerate(sp.keys)}
                 for name, sp in plan.steps.items()}
        for members in doc["elements"].values():
            for step, key, token, *_fp in members:
                sp = plan.steps.get(step)
                i = index.get(step, {}).get(key)
                if sp is None or i is None or sp.state[i] == DONE:
                    continue
                folder = plan.root / step / key if key else plan.root / step
                err = resultfile.read_error(folder)
                if err and err.get("token") == token:
                    rec = TaskRecord.from_result(err, err.get("status", TaskStatus.FAILED))
                    rec.error, rec.log_tail = err.get("error"), err.get("log_tail")
                    records.append(rec)
    if records:
        store.put(records)
    return len(records)


def summary(alive: dict[str, str], tasks: Live) -> dict[str, dict[str, int]]:
    """``step -> {"queued": tasks, "running": tasks}`` held by live detached elements."""
    out: dict[str, dict[str, int]] = {}
    for (step, _key), (job, index, _token, _fp) in tasks.items():
        state = alive.get(f"{job}_{index}", "queued")
        row = out.setdefault(step, {"queued": 0, "running": 0})
        row[state] = row.get(state, 0) + 1
    return out
