"""``shoal run --backend slurm --detach``: submit every step at once and return.

Each step's tasks go out as arrays that depend (``afterany``) on the arrays of the steps
they need; a task whose upstream tasks had not run at submission reads their result files
before it starts (:mod:`shoal.worker.deferred`) and is recorded *skipped* when one is missing.
Nothing follows the jobs: the result files are the truth. ``shoal status`` ingests them
into the store and shows what Slurm still holds; ``shoal run`` again attaches to the jobs
still queued or running (it never submits their tasks twice) and resubmits the rest.

The submission is listed in ``.shoal/slurm/detached.json``: for every array element, the
tasks it runs and their dispatch tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.backends.slurm import commands
from shoal.backends.slurm.backend import SlurmBackend
from shoal.backends.slurm.manifest import load as _load
from shoal.backends.slurm.manifest import manifest_path
from shoal.backends.slurm.manifest import write as _write_manifest
from shoal.errors import ShoalError
from shoal.plan.build import DONE, Plan, StepPlan
from shoal.schedule.dispatch import SpecBuilder
from shoal.state import resultfile
from shoal.state.resultfile import HOST
from shoal.state.status import TaskStatus
from shoal.state.store import Store, TaskRecord
from shoal.worker.taskspec import TaskSpec

# (step, key) -> (job, index, token, fingerprint)
Live = dict[tuple[str, str], tuple[str, int, str, "str | None"]]


@dataclass
class DetachReport:
    """What ``--detach`` submitted."""

    tasks: dict[str, int] = field(default_factory=dict)  # step -> tasks submitted
    arrays: dict[str, list[str]] = field(default_factory=dict)  # step -> array job ids
    sbatch_calls: int = 0
    elapsed: float = 0.0


def submit(plan: Plan, store: Store, backend: SlurmBackend, retries: int | None) -> DetachReport:
    """Submit every task the plan says to run, step after step, with dependencies.

    Every spec is built (and every check made) before the first ``sbatch``; the manifest is
    written after each step's arrays, so that a failure part-way leaves no job unlisted."""
    t0 = time.time()
    exp = plan.experiment
    report = DetachReport()
    builder = SpecBuilder(plan, store, False, lambda: None, node_stage=True)
    attempts = {(s, k): (fp, n) for s, k, fp, n in store._query(
        "SELECT step, key, fp, attempts FROM tasks")}
    now = time.time()
    work: list[tuple[StepPlan, list[list[TaskSpec]], list[TaskRecord]]] = []
    for sp in plan.steps.values():
        todo = [i for i in range(len(sp.keys)) if sp.is_included(i) and sp.state[i] != DONE]
        if not todo:
            continue
        step = sp.step
        builder.archives(sp)  # a missing stage= archive: an error before any sbatch
        n_seg = backend.segments(sp.name, step.resources.time_s)
        if n_seg > 1:
            raise ShoalError(
                f"step '{sp.name}': time={(step.resources.time_s or 0) / 3600:g}h needs {n_seg} "
                f"chained jobs (longest job: {backend.max_time(sp.name) or 0:g} s), and "
                "--detach has no controller to chain them; run attached (without --detach) "
                "or raise --max-time"
            )
        r = step.retries if step.retries is not None else (
            retries if retries is not None else exp.retries)
        specs: list[TaskSpec] = []
        records: list[TaskRecord] = []
        for i in todo:
            fp, n = attempts.get((sp.name, sp.keys[i]), (None, 0))
            attempt = (int(n or 0) if fp == sp.fps[i] else 0) + 1
            waits = any(up.state[j] != DONE for up, j in sp.upstream(i))
            if waits:
                spec = builder.build_deferred(sp, i, attempt, step.resources.cpus, int(r or 0))
            else:
                spec = builder.build(sp, i, attempt, step.resources.cpus, [])
                spec.retries = int(r or 0)
            specs.append(spec)
            records.append(TaskRecord(
                sp.name, sp.keys[i], TaskStatus.SUBMITTED, fp=sp.fps[i], code=sp.code,
                inputs=spec.inputs, params=spec.params, attempts=attempt - 1, started=now,
                host=HOST,
            ))
        if step.pack:  # members that differ only in the packed dimensions: one call
            groups: dict[tuple[Any, ...], list[TaskSpec]] = {}
            for spec in specs:
                spec.packed = True
                group = tuple(v for d, v in spec.params.items() if d not in step.pack)
                groups.setdefault(group, []).append(spec)
            size = step.pack_size or len(specs)
            bundles = [g[o:o + size] for g in groups.values() for o in range(0, len(g), size)]
        else:
            size = backend.bundle_size(sp.name, step.resources.time_s, len(specs))
            bundles = [specs[o:o + size] for o in range(0, len(specs), size)]
        work.append((sp, bundles, records))

    for sp, bundles, records in work:  # (each array is in the manifest once submitted)
        backend.pending = bundles
        ups = {d.up.name for d in sp.deps}
        after = [job for name in ups for job in report.arrays.get(name, [])]
        report.arrays[sp.name] = backend._submit(
            dependency="afterany:" + ":".join(after) if after else None)
        report.tasks[sp.name] = sum(len(b) for b in bundles)
        store.put(records)
    backend.elements.clear()  # nothing follows them from here
    report.sbatch_calls = backend.sbatch_calls
    report.elapsed = time.time() - t0
    return report


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
