"""Deciding what runs: each task is done, or to run because it is missing, failed or
changed — with the cause. Reads the store and the task folders; writes nothing.

A task is *done* when its stored record carries the current fingerprint, its folder exists,
and the upstream results it consumed (their run ids) are still the current ones. Result
files the store lacks (a controller killed between a worker's result file and its ingestion)
count as done too, when they hold the current fingerprint and inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.codehash import blake2b
from shoal.resultfile import RESULT, read_json
from shoal.state import Store
from shoal.tasks import CHANGED, DONE, FAILED, MISSING, REASONS, StepPlan


def many_inputs(run_ids: Iterable[Any]) -> str:
    """The identity of the results a gather consumes from one upstream step (their run ids,
    ``None`` for a missing one)."""
    return blake2b(",".join([str(r) for r in run_ids]).encode(), digest_size=8).hexdigest()


def inputs_of(sp: StepPlan, run_ids: Mapping[str, Sequence[Any]]) -> list[str] | None:
    """For every task of ``sp``, the identity of the upstream results it consumes.

    A task records this when it runs; it stays done only while its upstream tasks' current
    run ids still give the same value (so a gather reruns when an upstream task re-ran).
    """
    if not sp.deps:
        return None
    cols: list[list[str]] = []
    for d in sp.deps:
        ids = run_ids[d.up.name]
        if d.many:
            cols.append([many_inputs([ids[j] for j in js]) for js in d.idx])
        else:
            cols.append([str(ids[j]) for j in d.idx])
    if len(cols) == 1:
        return cols[0]
    return ["|".join(t) for t in zip(*cols)]


def task_inputs(sp: StepPlan, i: int, run_ids: Mapping[str, Sequence[Any]]) -> str | None:
    """:func:`inputs_of` for one task."""
    if not sp.deps:
        return None
    parts = []
    for d in sp.deps:
        ids = run_ids[d.up.name]
        if d.many:
            parts.append(many_inputs([ids[j] for j in d.idx[i]]))
        else:
            parts.append(str(ids[d.idx[i]]))
    return "|".join(parts)


def existing_keys(base: str, depth: int) -> set[str]:
    """Keys of the task folders that exist under ``base`` (one listdir per folder)."""
    if depth == 0:
        return {""} if os.path.isdir(base) else set()
    level = [("", base)]
    for _ in range(depth - 1):
        nxt: list[tuple[str, str]] = []
        for prefix, path in level:
            try:
                names = os.listdir(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            sep = f"{prefix}/" if prefix else ""
            nxt.extend([(f"{sep}{n}", f"{path}/{n}") for n in names if "=" in n])
        level = nxt
    found: set[str] = set()
    for prefix, path in level:  # the leaves: keys only
        try:
            names = os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        found.update([f"{prefix}/{n}" for n in names] if prefix else names)
    return found


def _upstream_pending(sp: StepPlan) -> list[bool] | None:
    flags: list[bool] | None = None
    for d in sp.deps:
        ustate = d.up.state
        if d.many:
            col = [any(ustate[j] != DONE for j in js) for js in d.idx]
        else:
            col = [ustate[j] != DONE for j in d.idx]
        flags = col if flags is None else [a or b for a, b in zip(flags, col)]
    return flags


def decide(plans: dict[str, StepPlan], store: Store, root: Path) -> None:
    """Fill ``state``/``detail`` of every step from the store and the task folders."""
    run_ids: dict[str, list[Any]] = {}
    for name, sp in plans.items():
        rows = store.decision_rows(name)
        n = len(sp.keys)
        state = [MISSING] * n
        ids: list[Any] = [None] * n
        detail: dict[int, str] = {}
        sp.state, sp.detail, sp.run_ids = state, detail, ids
        run_ids[name] = ids
        if rows:
            _decide_step(sp, rows, store, root, run_ids)
        if os.path.isdir(root / name):
            _adopt(sp, root / name, run_ids)


def _decide_step(
    sp: StepPlan, rows: dict[str, str], store: Store, root: Path, run_ids: dict[str, list[Any]]
) -> None:
    name, state, detail, ids = sp.name, sp.state, sp.detail, sp.run_ids
    existing = existing_keys(str(root / name), len(sp.dims))
    expected = inputs_of(sp, run_ids)
    pending = _upstream_pending(sp)
    fps, keys = sp.fps, sp.keys
    get = rows.get
    changed: list[int] = []
    if expected is None:
        prefixes = [f"done {fp} - " for fp in fps]
    else:
        prefixes = [f"done {fp} {inp} " for fp, inp in zip(fps, expected)]
    recs = list(map(get, keys))
    # the common case in bulk: the record says done with the expected prefix, the folder
    # exists and nothing upstream will run
    ok = [r is not None and r.startswith(p) for r, p in zip(recs, prefixes)]
    present = [k in existing for k in keys]
    if pending is None:
        good = [a and b for a, b in zip(ok, present)]
    else:
        good = [a and b and not c for a, b, c in zip(ok, present, pending)]
    n_pre = {len(p) for p in prefixes}
    if len(n_pre) == 1:  # every prefix has the same length: one slice for all
        cut = n_pre.pop()
        sp.run_ids = ids = [r[cut:] if g else None for r, g in zip(recs, good)]
        run_ids[name] = ids
    else:
        for i, g in enumerate(good):
            if g:
                ids[i] = recs[i][len(prefixes[i]):]
    sp.state = state = [DONE if g else MISSING for g in good]
    for i, rec in enumerate(recs):
        if rec is None or good[i]:
            continue
        key = keys[i]
        status, fp, _inputs, _run = rec.split(" ")
        if status != "done":
            if status == "failed":
                state[i] = FAILED
            else:
                detail[i] = status
        elif fp != fps[i]:
            state[i] = CHANGED
            changed.append(i)
        elif key not in existing:
            detail[i] = "folder deleted"
        elif pending is not None and pending[i]:
            state[i] = CHANGED
            detail[i] = _pending_cause(sp, i)
        else:
            state[i] = CHANGED
            detail[i] = "upstream results changed since it ran"
    if changed:
        codes = store.codes(name)
        for i in changed:
            detail[i] = _change_cause(sp, i, codes.get(sp.keys[i]), sp.code)


def _adopt(sp: StepPlan, base: Path, run_ids: dict[str, list[Any]]) -> None:
    """Count as done the tasks whose result file holds the current fingerprint and inputs but
    which the store does not know as done (a controller killed between a worker's result
    file and its ingestion). The run controller writes them into the store."""
    state = sp.state
    for i, s in enumerate(state):
        if s == DONE or (sp.deps and any(
            d.up.state[j] != DONE for d in sp.deps for j in (d.idx[i] if d.many else [d.idx[i]])
        )):
            continue
        key = sp.keys[i]
        path = f"{base}/{key}/{RESULT}" if key else f"{base}/{RESULT}"
        if not os.path.exists(path):
            continue
        doc = read_json(Path(path))
        if (
            doc is None or doc.get("fingerprint") != sp.fps[i]
            or doc.get("inputs") != task_inputs(sp, i, run_ids)
        ):
            continue
        state[i] = DONE
        sp.detail.pop(i, None)
        sp.run_ids[i] = doc.get("run_id")
        sp.adopted[i] = doc


def _pending_cause(sp: StepPlan, i: int) -> str:
    for d in sp.deps:
        for j in d.idx[i] if d.many else [d.idx[i]]:
            if d.up.state[j] != DONE:
                return _up_cause(d.up, j)
    return "upstream will run"


def _up_cause(up: StepPlan, j: int) -> str:
    label = f"{up.name}[{up.keys[j].replace('/', ',')}]" if up.keys[j] else up.name
    return f"upstream {label} will run ({REASONS[up.state[j]]})"


def _change_cause(sp: StepPlan, i: int, rcode: str | None, code: str) -> str:
    if rcode != code:
        old_base, _, old_ver = (rcode or "").partition("@")
        new_base, _, new_ver = code.partition("@")
        what = "command" if sp.step.command is not None else "code"
        if old_base != new_base:
            return f"{what} of '{sp.name}' changed"
        return f"version of '{sp.name}' changed ({old_ver or 'none'} -> {new_ver or 'none'})"
    for d in sp.deps:
        js = d.idx[i] if d.many else [d.idx[i]]
        for j in js:
            if d.up.state[j] != DONE:
                return _up_cause(d.up, j)
    names = ", ".join(f"'{d.up.name}'" for d in sp.deps)
    return f"upstream {names} changed since it ran"


