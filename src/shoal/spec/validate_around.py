"""Checks of a step's options around its code (``inputs=``, ``outputs=``, ``vars=``,
``env=``, ``setup=``, ``container=``, ``metrics=``): one message naming the step, the option
and the fix, before anything runs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from shoal.errors import SpecError
from shoal.spec import around

if TYPE_CHECKING:
    from shoal.spec.experiment import Experiment
    from shoal.spec.step import Step

#: Fields of a command template that shoal fills besides dimensions, vars and files.
BUILTIN_FIELDS = ("out", "threads", "device", "gpus", "step", "root", "python", "staged",
                  "procs", "nodes", "port", "master_addr")
#: Fields an ``env=`` value or a ``metrics=`` file may use besides dimensions and vars.
_ENV_FIELDS = ("out", "root", "step", "threads", "device", "gpus")


def command_fields(exp: Experiment, s: Step) -> dict[str, str]:
    """The placeholders of the step's options a command template may use, with what each
    is (for error messages)."""
    a = exp.around(s)
    out = {v: "a var" for v in a.vars}
    for what, fs in (("inputs", a.inputs), ("outputs", a.outputs)):
        if fs is not None:
            out[what] = f"all {what}"
            out.update({n: f"one of {what}=" for n in fs.names()})
    return out


def check(exp: Experiment, s: Step, upstream: set[str]) -> None:
    """Check the options of step ``s`` (``upstream``: the names of its needs)."""
    a = exp.around(s)
    dims = set(exp.grid.dims)
    taken: dict[str, str] = {d: "a grid dimension" for d in dims}
    taken.update({b: "a placeholder shoal fills" for b in BUILTIN_FIELDS})
    taken.update({u: "an upstream step" for u in upstream})
    for name in a.vars:
        if name in taken:
            raise SpecError(
                f"step '{s.name}': vars name '{name}' is {taken[name]}, so {{{name}}} would "
                "be ambiguous; rename the var"
            )
    names = {**taken, **{v: "a var" for v in a.vars}}
    for what, fs in (("inputs", a.inputs), ("outputs", a.outputs)):
        if fs is None:
            continue
        if what in names:
            raise SpecError(f"step '{s.name}': '{what}' is {names[what]}, so {{{what}}} would "
                            "be ambiguous; rename it")
        names[what] = f"all {what}"
        for name in fs.names():
            if name in names:
                raise SpecError(
                    f"step '{s.name}': {what}= name '{name}' is {names[name]}, so {{{name}}}"
                    f" would be ambiguous; rename the {what[:-1]}"
                )
            names[name] = f"one of {what}="
        for _, tpl in fs.items:
            _check_fields(exp, s, what, tpl, ())
            if what == "outputs" and any(c in tpl for c in "*?["):
                raise SpecError(f"step '{s.name}': outputs= template {tpl!r} is a glob; name "
                                "the exact paths the task owns")
    for var, tpl in a.env.items():
        _check_fields(exp, s, f"env {var}", tpl, _ENV_FIELDS)
        packed = [f for f in around.fields(tpl) if f in s.pack]
        if packed:
            raise SpecError(
                f"step '{s.name}': env {var}= names the packed dimension '{packed[0]}', but "
                "the members of a pack run in one process with one environment; read it "
                "from the member's params instead, or drop it from pack="
            )
    if s.command is None and s.opts.get("container"):
        raise SpecError(
            f"step '{s.name}': container= runs command steps (exp.command); a function "
            "step runs in shoal's own Python: run shoal inside the container instead, or "
            "make the step a command"
        )
    if a.metrics is not None and a.metrics.file is not None:
        _check_fields(exp, s, "metrics", a.metrics.file, ("out", "root", "step"))
        owned = [t for _, t in a.outputs.items] if a.outputs is not None else []
        if not a.metrics.file.startswith("{out}") and a.metrics.file not in owned:
            raise SpecError(
                f"step '{s.name}': metrics={a.metrics.file!r} is outside the task's folder "
                "and not one of its outputs=, so a file an earlier attempt left could be "
                "read as this one's: write it under {out}/, or list the same template in "
                "outputs= (removed before each attempt)"
            )
    if s.command is not None:
        _check_values(exp, s)


def _check_fields(exp: Experiment, s: Step, what: str, tpl: str,
                  extra: tuple[str, ...]) -> None:
    a = exp.around(s)
    allowed = set(s.per) | set(a.vars) | set(extra)
    for f in around.fields(tpl):
        if f not in allowed:
            hint = (f" — '{f}' is a grid dimension: add it to per=" if f in exp.grid.dims
                    else "")
            raise SpecError(
                f"step '{s.name}': {what}= template {tpl!r} names unknown placeholder "
                f"'{{{f}}}'{hint}; it may use the step's dimensions "
                f"({', '.join(s.per) or 'none'}), its vars ({', '.join(a.vars) or 'none'})"
                + (f" and {', '.join('{' + e + '}' for e in extra)}" if extra else "")
            )
    values = exp.grid.values
    base: dict[str, Any] = {d: values[d][0] for d in s.per if values.get(d)}
    base.update(a.vars)
    base.update(dict.fromkeys(extra, "x"))
    for d in s.per:
        for v in values.get(d, ()):
            try:
                around.fill(tpl, {**base, d: v})
            except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
                raise SpecError(
                    f"step '{s.name}': {what}= template {tpl!r} cannot be filled for "
                    f"{d}={v!r}: {type(exc).__name__}: {exc}; fix the field"
                ) from None


_BARE = re.compile(r"(?:^|(?<=[\s(]))\{([A-Za-z_]\w*)(?:![rsa])?(?::[^{}]*)?\}"
                   r"(?=[\s;|&<>)]|$)")
_SEPARATOR = re.compile(r"[;|&\n]")


def _check_values(exp: Experiment, s: Step) -> None:
    """Values a command cannot carry (a NUL byte) are errors; values that start with ``-``
    where the template passes them as a bare argument are warned about (a program would
    take them for options)."""
    values = exp.grid.values
    assert s.command is not None
    a = exp.around(s)
    for d in s.per:
        for v in values.get(d, ()):
            if isinstance(v, str) and "\0" in v:
                raise SpecError(
                    f"step '{s.name}': dimension '{d}' has a value with a NUL byte ({v!r}); "
                    "no command line can carry it: remove it from the grid"
                )
    for m in _BARE.finditer(s.command):
        name = m.group(1)
        cands = values.get(name, ()) if name in s.per else (
            [a.vars[name]] if name in a.vars else ())
        dash = next((v for v in cands if (isinstance(v, str) and v.startswith("-")) or (
            isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0)), None)
        if dash is None:
            continue
        before = _SEPARATOR.split(s.command[:m.start()])[-1]  # (this command's words)
        if "--" in before.split():  # the program reads no options after --
            continue
        note = (f"step '{s.name}': {{{name}}} is a bare argument of the command and "
                f"{name}={dash!r} starts with '-', so the program may read it as an option; "
                f"write --opt={{{name}}}, or put -- before it")
        if note not in exp.warnings:
            exp.warnings.append(note)
