"""The planner: steps × grid -> tasks, edges by projection, fingerprints, decisions.

Everything is linear in the number of tasks: a task's upstream task is found by projecting
its parameters onto the upstream step's dimensions and looking the tuple up in a dict.
A task is *done* when its stored record carries the current fingerprint, its folder exists,
and the upstream results it consumed are still the current ones; otherwise it is to run
because it is *missing*, *failed* or *changed* (with the cause).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from operator import itemgetter
from pathlib import Path
from typing import Any

from shoal.codehash import code_hash, text_hash
from shoal.errors import SpecError
from shoal.grid import Point, Value
from shoal.paths import part, value_text
from shoal.resultfile import RESULT, read_json
from shoal.spec import Experiment, Step
from shoal.state import Store

DONE, MISSING, FAILED, CHANGED = 0, 1, 2, 3
REASONS = ("done", "missing", "failed", "changed")


def _getter(positions: Sequence[int]) -> Callable[[Point], Point]:
    if len(positions) == 0:
        return lambda p: ()
    if len(positions) == 1:
        i = positions[0]
        return lambda p: (p[i],)
    return itemgetter(*positions)  # type: ignore[return-value]


@dataclass(eq=False)
class Dep:
    """An edge set: for each task of the step, its upstream task(s) in ``up``."""

    up: StepPlan
    many: bool  # False: idx[i] is one upstream index; True: idx[i] is a list of indices
    idx: list[Any]


@dataclass(eq=False)
class StepPlan:
    """The tasks of one step, as parallel lists indexed by task number."""

    step: Step
    dims: tuple[str, ...]
    params: list[Point]
    keys: list[str]
    code: str
    deps: list[Dep] = field(default_factory=list)
    fps: list[str] = field(default_factory=list)
    state: list[int] = field(default_factory=list)
    detail: dict[int, str] = field(default_factory=dict)
    included: list[bool] | None = None
    index: dict[Point, int] = field(default_factory=dict)
    run_ids: list[Any] = field(default_factory=list)  # of done tasks (None otherwise)
    adopted: dict[int, dict[str, Any]] = field(default_factory=dict)  # result files not in store

    @property
    def name(self) -> str:
        return self.step.name

    def __len__(self) -> int:
        return len(self.keys)

    def param_dict(self, i: int) -> dict[str, Value]:
        return dict(zip(self.dims, self.params[i]))

    def is_included(self, i: int) -> bool:
        return self.included is None or self.included[i]

    def upstream(self, i: int) -> list[tuple[StepPlan, int]]:
        out: list[tuple[StepPlan, int]] = []
        for d in self.deps:
            if d.many:
                out.extend((d.up, j) for j in d.idx[i])
            else:
                out.append((d.up, d.idx[i]))
        return out

    def counts(self) -> dict[str, Any]:
        """``{"total", "done", "run", "reasons": {...}}`` over the included tasks."""
        c = [0, 0, 0, 0]
        inc = self.included
        if inc is None:
            for s in self.state:
                c[s] += 1
        else:
            for s, ok in zip(self.state, inc):
                if ok:
                    c[s] += 1
        total = sum(c)
        return {
            "total": total,
            "done": c[DONE],
            "run": total - c[DONE],
            "reasons": {"missing": c[MISSING], "failed": c[FAILED], "changed": c[CHANGED]},
        }


@dataclass(eq=False)
class Plan:
    """All tasks of an experiment and what would run."""

    experiment: Experiment
    root: Path
    steps: dict[str, StepPlan]

    def summary(self) -> dict[str, Any]:
        """The ``shoal plan --json`` document."""
        steps = {name: sp.counts() for name, sp in self.steps.items()}
        return {
            "experiment": self.experiment.name,
            "total": sum(s["total"] for s in steps.values()),
            "run": sum(s["run"] for s in steps.values()),
            "steps": steps,
        }

    def to_run(self) -> list[tuple[StepPlan, int]]:
        """Every included task that is not done, in dependency order."""
        return [
            (sp, i)
            for sp in self.steps.values()
            for i, s in enumerate(sp.state)
            if s != DONE and sp.is_included(i)
        ]

    def task_label(self, sp: StepPlan, i: int) -> str:
        key = sp.keys[i]
        return f"{sp.name}[{key.replace('/', ',')}]" if key else sp.name


def _part_cache(exp: Experiment, dim: str, step: str) -> dict[Value, str]:
    cache: dict[Value, str] = {}
    seen: dict[str, Value] = {}
    for v in exp.grid.values[dim]:
        p = part(dim, v, step=step)
        if p in seen:
            raise SpecError(
                f"step '{step}', dimension '{dim}': values {seen[p]!r} and {v!r} give the same "
                f"folder name '{p}'; make them distinct (e.g. all str or all int)"
            )
        seen[p] = v
        cache[v] = p
    return cache


def _keys(params: list[Point], caches: list[dict[Value, str]]) -> list[str]:
    n = len(caches)
    if n == 0:
        return [""] * len(params)
    if n == 1:
        c0 = caches[0]
        return [c0[p[0]] for p in params]
    if n == 2:
        c0, c1 = caches
        return [f"{c0[a]}/{c1[b]}" for a, b in params]
    if n == 3:
        c0, c1, c2 = caches
        return [f"{c0[a]}/{c1[b]}/{c2[c]}" for a, b, c in params]
    return ["/".join([c[v] for c, v in zip(caches, p)]) for p in params]


def step_code(step: Step) -> str:
    """The code identity of a step: normalised code (or template) hash, plus its version."""
    base = code_hash(step.fn) if step.fn is not None else text_hash(step.command or "")
    return f"{base}@{step.version}" if step.version is not None else base


def _selector(step: Step, up: StepPlan) -> Callable[[Point], bool] | None:
    if not step.select:
        return None
    tests: list[tuple[int, Callable[[Value], bool]]] = []
    for d, want in step.select.items():
        pos = up.dims.index(d)
        if callable(want):
            tests.append((pos, want))
        else:
            allowed = set(want) if isinstance(want, (list, tuple, set, frozenset)) else {want}
            tests.append((pos, allowed.__contains__))
    return lambda p: all(t(p[i]) for i, t in tests)


def expand(exp: Experiment) -> dict[str, StepPlan]:
    """Expand every step over the grid, with edges and fingerprints (no store access)."""
    order = exp.validate()
    gdims = exp.grid.dims
    points = exp.grid.points()
    caches: dict[str, dict[Value, str]] = {}
    plans: dict[str, StepPlan] = {}
    for step in order:
        dims = tuple(d for d in gdims if d in step.per)
        deps: list[Dep] = []
        if step.is_gather:
            groups: dict[Point, list[list[int]]] = {}
            overs = [plans[exp.resolve(r, by=step.name).name] for r in step.over]
            for k, up in enumerate(overs):
                get = _getter([up.dims.index(d) for d in dims])
                keep = _selector(step, up)
                for j, p in enumerate(up.params):
                    if keep is None or keep(p):
                        g = groups.get(get(p))
                        if g is None:
                            g = groups[get(p)] = [[] for _ in overs]
                        g[k].append(j)
            params = list(groups)
            if not params:
                raise SpecError(
                    f"gather '{step.name}': select={step.select!r} keeps no upstream task; "
                    "loosen the selection"
                )
            for k, up in enumerate(overs):
                deps.append(Dep(up, True, [groups[p][k] for p in params]))
        elif dims == gdims:
            params = points
        else:
            params = list(dict.fromkeys(map(_getter([gdims.index(d) for d in dims]), points)))
        for d in dims:
            if d not in caches:
                caches[d] = _part_cache(exp, d, step.name)
        sp = StepPlan(step, dims, params, _keys(params, [caches[d] for d in dims]), step_code(step))
        sp.index = dict(zip(params, range(len(params))))
        for ref in step.needs:
            up = plans[exp.resolve(ref, by=step.name).name]
            get = _getter([dims.index(d) for d in up.dims])
            try:
                idx = [up.index[q] for q in map(get, params)]
            except KeyError as exc:
                raise SpecError(
                    f"step '{step.name}' needs '{up.name}', which has no task at "
                    f"{dict(zip(up.dims, exc.args[0]))} (its select= leaves it out); select it "
                    f"in '{up.name}' or drop the need"
                ) from None
            deps.insert(0, Dep(up, False, idx))
        sp.deps = deps
        sp.fps = _fingerprints(sp)
        plans[step.name] = sp
    return plans


def _fingerprints(sp: StepPlan) -> list[str]:
    code = sp.code
    keys = sp.keys
    if not sp.deps:
        return [blake2b(f"{code}|{k}".encode(), digest_size=8).hexdigest() for k in keys]
    if len(sp.deps) == 1 and not sp.deps[0].many:
        ufps = sp.deps[0].up.fps
        return [
            blake2b(f"{code}|{k}|{ufps[j]}".encode(), digest_size=8).hexdigest()
            for k, j in zip(keys, sp.deps[0].idx)
        ]
    out = []
    for i, k in enumerate(keys):
        parts = [code, k]
        for d in sp.deps:
            ufps = d.up.fps
            if d.many:
                parts.append(",".join([ufps[j] for j in d.idx[i]]))
            else:
                parts.append(ufps[d.idx[i]])
        out.append(blake2b("|".join(parts).encode(), digest_size=8).hexdigest())
    return out


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
            cols.append([
                blake2b(",".join([str(ids[j]) for j in js]).encode(), digest_size=8).hexdigest()
                for js in d.idx
            ])
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
            text = ",".join([str(ids[j]) for j in d.idx[i]])
            parts.append(blake2b(text.encode(), digest_size=8).hexdigest())
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


def apply_only(plans: dict[str, StepPlan], only: Mapping[str, Sequence[Value]]) -> None:
    """Restrict to tasks matching ``only`` (dim -> allowed values) whose upstream is included."""
    for sp in plans.values():
        tests = [(sp.dims.index(d), set(vals)) for d, vals in only.items() if d in sp.dims]
        inc = [all(p[k] in allowed for k, allowed in tests) for p in sp.params]
        for d in sp.deps:
            uinc = d.up.included
            if uinc is None:
                continue
            if d.many:
                inc = [ok and all(uinc[j] for j in js) for ok, js in zip(inc, d.idx)]
            else:
                inc = [ok and uinc[j] for ok, j in zip(inc, d.idx)]
        sp.included = inc


def parse_only(exp: Experiment, items: Sequence[str]) -> dict[str, list[Value]]:
    """``["site=a", "seed=1", "seed=2"]`` -> ``{"site": ["a"], "seed": [1, 2]}``."""
    values = exp.grid.values
    out: dict[str, list[Value]] = {}
    for item in items:
        dim, sep, text = item.partition("=")
        if not sep or dim not in values:
            raise SpecError(
                f"--only {item!r}: expected dim=value with a grid dimension "
                f"({', '.join(values)})"
            )
        match = [v for v in values[dim] if value_text(v) == text or str(v) == text]
        if not match:
            shown = ", ".join(value_text(v) for v in values[dim][:10])
            raise SpecError(
                f"--only {item!r}: '{text}' is not a value of dimension '{dim}' "
                f"(values: {shown}{', ...' if len(values[dim]) > 10 else ''})"
            )
        out.setdefault(dim, []).extend(match)
    return out


def build_plan(
    exp: Experiment, root: Path, only: Mapping[str, Sequence[Value]] | None = None
) -> Plan:
    """Expand, read the store of ``root`` (never writing), decide, and filter by ``only``."""
    plans = expand(exp)
    with Store.open(root) as store:
        decide(plans, store, root)
    if only:
        apply_only(plans, only)
    return Plan(exp, root, plans)
