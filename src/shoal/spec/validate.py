"""Whole-definition checks: every error names the step, the dimension and the fix."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from shoal.errors import SpecError
from shoal.spec import around, validate_around
from shoal.spec.step import _STEP_NAME, Step, signature_args

if TYPE_CHECKING:
    from shoal.spec.experiment import Experiment

#: Template fields every command step may use besides its dimensions and upstream steps.
TEMPLATE_FIELDS = validate_around.BUILTIN_FIELDS


def _fmt(dims: Any) -> str:
    return "[" + ", ".join(repr(d) for d in dims) + "]"


def template_fields(template: str) -> list[str]:
    """The root names of the ``{fields}`` a command template uses."""
    return around.fields(template, "command template")


#: A placeholder alone inside quotes: "{seed}" or '{site}' (shoal quotes values itself).
_QUOTED = re.compile(r"""(["'])\{([A-Za-z_]\w*)(![rsa])?(:[^{}]*)?\}\1""")


def _check_template(exp: Experiment, s: Step, upstream: set[str]) -> None:
    """Placeholders in quotes, and fields that cannot be filled (``{lr:.2q}``, ``{a.b}``,
    ``{a[0]}``) with any value of the step's dimensions: one error before anything runs."""
    from shoal.spec.template import RawField, fill_command

    assert s.command is not None
    quoted = set(s.per) | set(validate_around.command_fields(exp, s))
    m = next((m for m in _QUOTED.finditer(s.command) if m.group(2) in quoted), None)
    if m:  # (a dimension's value: the common slip; shoal's own paths are left alone)
        raise SpecError(
            f"step '{s.name}': the command template puts {{{m.group(2)}}} in quotes "
            f"({m.group(0)}); shoal already quotes every value for the shell, so those quotes "
            f"would become part of the value: write {{{m.group(2)}}} without them"
        )
    values = exp.grid.values
    base: dict[str, Any] = {d: values[d][0] for d in s.per if values.get(d)}
    base.update(out="/out", threads=1, device="cpu", gpus="", step=s.name, root="/root",
                python="python", staged=defaultdict(lambda: RawField('"$STAGED"')),
                procs=s.procs, nodes=s.nodes, port=RawField('"$MASTER_PORT"'),
                master_addr=RawField('"$MASTER_ADDR"'))
    base.update({u: "/upstream" for u in upstream})
    base.update(exp.around(s).vars)
    files = validate_around.command_fields(exp, s)
    base.update({f: RawField("'/file'") for f, what in files.items() if what != "a var"})
    trials = [(f" for {d}={v!r}", {**base, d: v}) for d in s.per for v in values.get(d, ())]
    for where, trial in trials or [("", base)]:  # (each value of each dimension once)
        fill_command(s.name, s.command, trial, where)


def validate(exp: Experiment) -> list[Step]:
    """Check ``exp`` and return its steps in dependency order."""
    steps = exp._registered
    if not steps:
        raise SpecError(
            f"experiment '{exp.name}' has no steps; declare one with @exp.step(per=[...])"
        )
    seen: dict[str, Step] = {}
    for s in steps:
        if not isinstance(s.name, str) or not _STEP_NAME.match(s.name):
            raise SpecError(
                f"step name {s.name!r} is not valid; use letters, digits, _ and - "
                "(it becomes a folder name)"
            )
        if s.name in seen:
            raise SpecError(
                f"step '{s.name}' is declared twice; give one of them another name "
                "(name=... in the decorator)"
            )
        seen[s.name] = s
    dims = exp.grid.dims
    exp.warnings.clear()
    for s in steps:
        _check_step(exp, s, dims)
    q = exp.headline
    if q is not None:
        if q.step not in seen:
            raise SpecError(f"exp.question: unknown step '{q.step}' (steps: "
                            f"{', '.join(seen)})")
        q.resolve(seen[q.step].per, {d: list(exp.grid.values[d]) for d in dims})
    return _topo(exp, steps)


def _check_step(exp: Experiment, s: Step, dims: tuple[str, ...]) -> None:
    for d in s.per:
        if d not in dims:
            raise SpecError(
                f"step '{s.name}': per names unknown dimension '{d}'; the grid has "
                f"{', '.join(dims)} — fix the name in per= or add '{d}' to the Grid"
            )
    per = set(s.per)
    for ref in s.needs:
        up = exp.resolve(ref, by=s.name, what="needs")
        if up is s:
            raise SpecError(f"step '{s.name}' needs itself; remove it from needs=")
        extra = [d for d in up.per if d not in per]
        if extra:
            raise SpecError(
                f"step '{s.name}' (per={_fmt(s.per)}) needs '{up.name}' (per={_fmt(up.per)}), "
                f"which varies over {_fmt(extra)} that '{s.name}' does not: one task of "
                f"'{s.name}' would need several of '{up.name}'. Fix: add {_fmt(extra)} to "
                f"per= of '{s.name}', or collect them with @exp.gather(over={up.name})"
            )
    if s.is_gather:
        if not s.over:
            raise SpecError(f"gather '{s.name}': over= must name the step to gather")
        ups = [exp.resolve(ref, by=s.name, what="over") for ref in s.over]
        for up in ups:
            if up is s:
                raise SpecError(f"gather '{s.name}' gathers over itself; name another step")
            missing = [d for d in s.per if d not in up.per]
            if missing:
                raise SpecError(
                    f"gather '{s.name}' (per={_fmt(s.per)}) over '{up.name}' "
                    f"(per={_fmt(up.per)}): '{up.name}' does not vary over {_fmt(missing)}, "
                    f"so it cannot be grouped by it. Fix: drop {_fmt(missing)} from per= of "
                    f"'{s.name}', or use needs=[{up.name}]"
                )
        if s.select:
            _check_select(exp, s, ups)
    elif s.over or s.select:
        raise SpecError(f"step '{s.name}': over=/select= belong to @exp.gather, not @exp.step")
    for d in s.pack:
        if d not in per:
            raise SpecError(
                f"step '{s.name}': pack names dimension '{d}' which is not in "
                f"per={_fmt(s.per)}; pack only over dimensions the step varies over"
            )
    if s.pack and (s.command is not None or s.is_gather):
        raise SpecError(
            f"step '{s.name}': pack= needs a function step (@exp.step): one call trains "
            "the members together; remove pack= here"
        )
    _check_resource_dims(exp, s, per)
    if s.pack and s.procs > 1:
        raise SpecError(
            f"step '{s.name}': pack= and procs={s.procs} do not go together: a pack trains its "
            "members in one process; give each task its ranks (procs=) or pack them, not both"
        )
    if s.procs == 1 and s.command is not None and any(
            f in s.command for f in ("{port", "{master_addr")):
        raise SpecError(
            f"step '{s.name}': the command uses {{port}}/{{master_addr}}, the rendezvous of a "
            "multi-process task; give procs= (the ranks it starts, e.g. procs=2)")
    if s.pack_size is not None and (not isinstance(s.pack_size, int) or s.pack_size < 1):
        raise SpecError(f"step '{s.name}': pack_size={s.pack_size!r} must be a whole number >= 1")
    if s.retries is not None and (not isinstance(s.retries, int) or s.retries < 0):
        raise SpecError(f"step '{s.name}': retries={s.retries!r} must be a whole number >= 0")
    upstream = {exp.resolve(r, by=s.name).name for r in s.needs}
    validate_around.check(exp, s, upstream)
    if s.command is not None:
        if "\0" in s.command:
            raise SpecError(f"step '{s.name}': the command template holds a NUL byte, which "
                            "no command line can carry; remove it")
        file_fields = validate_around.command_fields(exp, s)
        allowed = set(s.per) | set(TEMPLATE_FIELDS) | set(file_fields)
        for name in upstream & set(exp.grid.dims):
            raise SpecError(
                f"step '{s.name}': upstream step '{name}' has the name of a grid dimension, so "
                f"{{{name}}} in its command would be ambiguous; rename the step (name=...)"
            )
        for f in template_fields(s.command):
            if f == "":
                raise SpecError(
                    f"step '{s.name}': the command template has an empty {{}} field; name the "
                    f"value, e.g. {{{s.per[0] if s.per else 'out'}}} (write {{{{ }}}} for braces)"
                )
            if f not in allowed and f not in upstream:
                hint = ""
                if f in exp.grid.dims:
                    hint = f" — '{f}' is a grid dimension: add it to per="
                raise SpecError(
                    f"step '{s.name}': the command template names unknown placeholder "
                    f"'{{{f}}}'{hint}; it may use its dimensions ({', '.join(s.per) or 'none'}), "
                    f"{', '.join('{' + t + '}' for t in [*TEMPLATE_FIELDS, *file_fields])}, or an "
                    f"upstream step from needs= (its folder). Write {{{{ and }}}} for literal "
                    "braces"
                )
        _check_template(exp, s, upstream)
    elif s.fn is not None:
        signature_args(s, s.per)


def _check_resource_dims(exp: Experiment, s: Step, per: Any) -> None:
    """``cpus="{n_threads}"``: a dimension of the step, every value of which fits."""
    from shoal.spec.resources import for_task

    values = exp.grid.values
    for name, dim in s.resource_dims.items():
        if dim not in per:
            raise SpecError(
                f"step '{s.name}': {name}=\"{{{dim}}}\" names '{dim}', which is not a "
                f"dimension of the step (per={_fmt(s.per)}); add it to per= or give a number")
        if dim in s.pack:
            raise SpecError(
                f"step '{s.name}': {name}= comes from '{dim}', a packed dimension: the "
                "members of a pack share one process; pack over another dimension")
        for v in values.get(dim, ()):
            for_task(s.name, s.resources, {name: dim}, {dim: v})


def _check_select(exp: Experiment, s: Step, ups: list[Step]) -> None:
    values = exp.grid.values
    assert s.select is not None
    for d, want in s.select.items():
        if callable(want):
            continue
        for up in ups:
            if d not in up.per:
                raise SpecError(
                    f"gather '{s.name}': select names dimension '{d}', which '{up.name}' does "
                    f"not vary over (per={_fmt(up.per)}); select on one of its dimensions"
                )
        wanted = want if isinstance(want, (list, tuple, set, frozenset)) else [want]
        for w in wanted:
            if w not in values[d]:
                raise SpecError(
                    f"gather '{s.name}': select {d}={w!r} matches no value of dimension '{d}' "
                    f"(values: {', '.join(map(repr, values[d][:10]))}"
                    f"{', ...' if len(values[d]) > 10 else ''}); fix the value"
                )


def _topo(exp: Experiment, steps: list[Step]) -> list[Step]:
    deps: dict[str, list[str]] = {}
    for s in steps:
        refs = list(s.needs) + list(s.over)
        deps[s.name] = [exp.resolve(r, by=s.name).name for r in refs]
    order: list[Step] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    by_name = {s.name: s for s in steps}

    def visit(name: str, path: list[str]) -> None:
        st = state.get(name)
        if st == 2:
            return
        if st == 1:
            cycle = [*path[path.index(name):], name]
            raise SpecError(
                f"steps form a cycle: {' -> '.join(cycle)}; step '{name}' cannot depend on "
                "its own downstream — remove one of these needs"
            )
        state[name] = 1
        for d in deps[name]:
            visit(d, [*path, name])
        state[name] = 2
        order.append(by_name[name])

    for s in steps:
        visit(s.name, [])
    return order
