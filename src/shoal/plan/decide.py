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

from shoal.plan.tasks import BLOCKED, CHANGED, DONE, FAILED, MISSING, REASONS, StepPlan
from shoal.spec.codehash import blake2b
from shoal.state.resultfile import OWNER, RESULT, read_json
from shoal.state.status import TaskStatus
from shoal.state.store import Store


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


def decide(plans: dict[str, StepPlan], store: Store, root: Path,
           base: str | None = None) -> None:
    """Fill ``state``/``detail`` of every step from the store and the task folders
    (``base``: the experiment folder, to show paths relative to it)."""
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
        files = sp.files
        if files is not None:
            if files.outputs is not None and DONE in sp.state:
                _outputs_intact(sp, files.outputs, store.column(name, "outputs"), base)
            for i, why in files.missing.items():  # an input is missing: it cannot run
                sp.state[i] = BLOCKED
                sp.detail[i] = why
                sp.run_ids[i] = None
        _block_downstream(sp)


def _block_downstream(sp: StepPlan) -> None:
    """A task that needs a blocked task cannot run either (a gather with allow_missing=True
    runs on what it has)."""
    deps = [d for d in sp.deps if BLOCKED in d.up.state
            and not (d.many and sp.step.allow_missing)]
    if not deps:
        return
    state = sp.state
    for d in deps:
        ustate = d.up.state
        for i, s in enumerate(state):
            if s in (DONE, BLOCKED):
                continue
            js = d.idx[i] if d.many else (d.idx[i],)
            j = next((j for j in js if ustate[j] == BLOCKED), None)
            if j is not None:
                state[i] = BLOCKED
                sp.detail[i] = _up_cause(d.up, j)
                sp.run_ids[i] = None


def _outputs_intact(sp: StepPlan, outputs: list[list[str]], stamps: dict[str, Any],
                    base: str | None) -> None:
    """A done task whose owned outputs are not all there is missing; one whose output is
    not what it left (removed and made again by another run root, rewritten) is changed."""
    lstat = os.lstat
    for i, s in enumerate(sp.state):
        if s != DONE:
            continue
        doc = sp.adopted.get(i)
        left = (doc.get("outputs") if doc else stamps.get(sp.keys[i])) or {}
        why = state = None
        for o in outputs[i]:
            try:
                st = lstat(o)
            except OSError:
                why, state = f"output missing: {_shown(o, base)}", MISSING
                break
            stamp = left.get(o) if isinstance(left, dict) else None
            if stamp and _now(o, st, stamp) != stamp:
                why, state = (f"output changed since it ran: {_shown(o, base)} (another run "
                              "root, or by hand)"), CHANGED
                break
        if why is not None and state is not None:
            sp.state[i] = state
            sp.detail[i] = why
            sp.run_ids[i] = None
            sp.adopted.pop(i, None)


def _now(path: str, st: os.stat_result, stamp: list[Any]) -> list[Any]:
    """The output's stamp as it is now, in the form of the recorded ``stamp``: a file's
    [inode, mtime_ns], a folder's [inode, the token in its .shoal-owner]."""
    if len(stamp) == 2 and isinstance(stamp[1], str):
        try:
            with open(f"{path}/{OWNER}") as fh:
                return [st.st_ino, fh.read()]
        except OSError:
            return [st.st_ino, None]
    return [st.st_ino, st.st_mtime_ns][:len(stamp)]


def _shown(path: str, base: str | None) -> str:
    return os.path.relpath(path, base) if base and path.startswith(base + "/") else path

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
        sp.run_ids = ids = [r[cut:] if g and r else None for r, g in zip(recs, good)]
        run_ids[name] = ids
    else:
        for i, g in enumerate(good):
            rec = recs[i]
            if g and rec:
                ids[i] = rec[len(prefixes[i]):]
    sp.state = state = [DONE if g else MISSING for g in good]
    for i, rec in enumerate(recs):
        if rec is None or good[i]:
            continue
        key = keys[i]
        status, fp, _inputs, _run = rec.split(" ")
        if status != TaskStatus.DONE:
            if status == TaskStatus.FAILED:
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
        ran_with = store.column(name, "files") if sp.files and sp.files.inputs else {}
        for i in changed:
            detail[i] = (_code_cause(sp, codes.get(sp.keys[i]))
                         or _files_cause(sp, i, ran_with.get(sp.keys[i]))
                         or _change_cause(sp, i))


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
    label = up.label(j)
    if up.state[j] == BLOCKED:
        return f"upstream {label} is blocked ({up.detail.get(j, 'an input is missing')})"
    return f"upstream {label} will run ({REASONS[up.state[j]]})"


def _code_cause(sp: StepPlan, rcode: str | None) -> str | None:
    """What changed in the step's code identity (``base@version;part=hash...``)."""
    code = sp.code
    if rcode == code:
        return None
    old_main, *old_parts = (rcode or "").split(";")
    new_main, *new_parts = code.split(";")
    old_base, _, old_ver = old_main.partition("@")
    new_base, _, new_ver = new_main.partition("@")
    what = "command" if sp.step.command is not None else "code"
    if old_base != new_base:
        return f"{what} of '{sp.name}' changed"
    if old_ver != new_ver:
        return f"version of '{sp.name}' changed ({old_ver or 'none'} -> {new_ver or 'none'})"
    old = dict(p.partition("=")[::2] for p in old_parts)
    new = dict(p.partition("=")[::2] for p in new_parts)
    parts = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    return f"{' and '.join(parts) or 'definition'} of '{sp.name}' changed"


def _files_cause(sp: StepPlan, i: int, ran: dict[str, str] | None) -> str | None:
    """Which input file changed since the task ran (``ran``: path -> digest it ran with)."""
    files = sp.files
    if files is None or files.inputs is None:
        return None
    if ran is None:  # (a record without them: the code and upstream are the same)
        return "input files changed since it ran" if not sp.deps else None
    now = files.digests_of(i)
    for path, digest in now.items():
        if path not in ran:
            return f"input added: {path}"
        if ran[path] != digest:
            return f"input changed: {path}"
    gone = next((p for p in ran if p not in now), None)
    return f"input removed: {gone}" if gone else None


def _change_cause(sp: StepPlan, i: int) -> str:
    for d in sp.deps:
        js = d.idx[i] if d.many else [d.idx[i]]
        for j in js:
            if d.up.state[j] != DONE:
                return _up_cause(d.up, j)
    names = ", ".join(f"'{d.up.name}'" for d in sp.deps)
    return f"upstream {names} changed since it ran" if names else "changed since it ran"


