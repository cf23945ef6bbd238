"""The planner: steps × grid -> tasks, edges by projection, fingerprints, decisions.

Everything is linear in the number of tasks: a task's upstream task is found by projecting
its parameters onto the upstream step's dimensions and looking the tuple up in a dict.
A task is *done* when its stored record carries the current fingerprint, its folder exists,
and the upstream results it consumed are still the current ones; otherwise it is to run
because it is *missing*, *failed* or *changed* (with the cause).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shoal.errors import SpecError
from shoal.plan.decide import decide, existing_keys, inputs_of, task_inputs
from shoal.plan.planfiles import check_files, check_path_length, step_files
from shoal.plan.taskfiles import FileDigests
from shoal.plan.tasks import (
    BLOCKED,
    CHANGED,
    DONE,
    FAILED,
    MISSING,
    REASONS,
    Dep,
    Plan,
    StepPlan,
    _getter,
)
from shoal.spec.codehash import blake2b, code_hash, text_hash
from shoal.spec.experiment import Experiment, Step
from shoal.spec.grid import Point, Value
from shoal.spec.paths import decode, matches, part, value_text
from shoal.state.store import Store, db_path

__all__ = [
    "BLOCKED", "CHANGED", "DONE", "FAILED", "MISSING", "REASONS", "Dep", "Plan", "StepPlan",
    "apply_only", "build_plan", "decide", "existing_keys", "expand", "inputs_of",
    "parse_only", "step_code", "task_inputs",
]


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


def step_code(step: Step, exp: Experiment | None = None) -> str:
    """The code identity of a step: normalised code (or template) hash, plus its version,
    plus a hash per option around it (``;vars=...;container=...``: see
    :meth:`shoal.spec.around.Around.identity`)."""
    base = code_hash(step.fn) if step.fn is not None else text_hash(step.command or "")
    code = f"{base}@{step.version}" if step.version is not None else base
    if exp is not None:
        for part, text in exp.around(step).identity().items():
            code += f";{part}={text_hash(text)}"
    return code


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


def expand(exp: Experiment, digests: FileDigests | None = None,
           root: Path | None = None) -> dict[str, StepPlan]:
    """Expand every step over the grid, with edges, files and fingerprints (``digests``: the
    input files' digests, cached in the store; ``root``: the run root, which no output may
    hold)."""
    order = exp.validate()
    base = str(exp.source.parent if exp.source else Path.cwd())
    if digests is None:
        digests = FileDigests(None, base)
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
        sp = StepPlan(step, dims, params, _keys(params, [caches[d] for d in dims]),
                      step_code(step, exp))
        sp.index = dict(zip(params, range(len(params))))
        if root is not None:
            check_path_length(sp, root)
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
        sp.files = step_files(exp, sp, digests)
        sp.fps = _fingerprints(sp)
        plans[step.name] = sp
    if any(sp.files is not None for sp in plans.values()):
        check_files(exp, plans, digests, root)
    return plans


def _fingerprints(sp: StepPlan) -> list[str]:
    code = sp.code
    keys = sp.keys
    if sp.files is not None and sp.files.ident is not None:  # input files: their contents
        keys = [f"{k}|{ident}" for k, ident in zip(keys, sp.files.ident)]
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


def pick_values(values: Sequence[Value], dim: str, text: str, said: str,
                where: str = "") -> list[Value]:
    """The values of ``dim`` that ``text`` (typed on the command line) names: as typed, else
    percent-decoded (task labels show encoded values); none is a SpecError that starts with
    ``said`` and lists the values."""
    picked = ([v for v in values if matches(v, text)]
              or [v for v in values if matches(v, decode(text))])
    if not picked:
        shown = ", ".join(value_text(v) for v in values[:10])
        raise SpecError(f"{said}: '{text}' is not a value of dimension '{dim}'{where} "
                        f"(values: {shown}{', ...' if len(values) > 10 else ''})")
    return picked


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
        out.setdefault(dim, []).extend(pick_values(values[dim], dim, text, f"--only {item!r}"))
    return out


def build_plan(
    exp: Experiment, root: Path, only: Mapping[str, Sequence[Value]] | None = None,
    store: Store | None = None, missing_inputs: str = "error",
) -> Plan:
    """Expand, read the store of ``root``, decide, and filter by ``only``. The store is
    only written to remember the digests of input files (``store``: the run's, writable).

    ``missing_inputs``: ``"error"`` (a task whose input file is missing is one SpecError
    naming the task and the path) or ``"skip"`` (such tasks are *blocked*: they do not run,
    and say why).
    """
    base = str(exp.source.parent if exp.source else Path.cwd())
    if store is not None:
        plans = _plan_with(exp, root, store, base)
    else:
        with Store.open(root) as ro:
            plans = _plan_with(exp, root, ro, base)
    if only:
        apply_only(plans, only)
    plan = Plan(exp, root, plans)
    blocked = plan.blocked()
    if blocked and missing_inputs == "error":
        sp, i = blocked[0]
        assert sp.files is not None
        more = f" ({len(blocked) - 1} more tasks lack inputs)" if len(blocked) > 1 else ""
        raise SpecError(
            f"step '{sp.name}': {sp.files.missing[i]}{more}; create the file or fix the "
            "template in inputs=, or pass --keep-going to run the tasks that have their inputs"
        )
    return plan


def _plan_with(exp: Experiment, root: Path, store: Store, base: str) -> dict[str, StepPlan]:
    digests = FileDigests(store, base)
    plans = expand(exp, digests, root)
    decide(plans, store, root, base)
    if digests.fresh:
        _remember(digests, store, root)
    return plans


def _remember(digests: FileDigests, store: Store, root: Path) -> None:
    """Keep the digests just computed (the run's store; for ``shoal plan``, an existing
    store, best effort: a busy store is left alone)."""
    import sqlite3

    if store.conn is not None and not store.read_only:
        digests.save(store)
        return
    if not db_path(root).exists():
        return
    try:
        with Store.open(root, create=True, timeout=0.2) as rw:
            digests.save(rw)
    except (sqlite3.Error, OSError):
        pass
