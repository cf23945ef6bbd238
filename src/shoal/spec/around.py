"""What a step reads, writes and needs around it: ``inputs=``, ``outputs=``, ``vars=``,
``env=``, ``setup=``, ``container=`` and a command's ``metrics=``.

Plain data and their checks (spec layer): each option is parsed where it is declared (one
:class:`~shoal.errors.SpecError` naming the step, the option and the fix), and
:func:`resolve` merges the experiment's defaults with a step's own into one :class:`Around`.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import SpecError
from shoal.spec.paths import value_text

#: Container runtimes shoal knows how to call (``runtime=`` may also be a path to one).
RUNTIMES = ("apptainer", "singularity", "podman", "docker")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a placeholder, or an environment variable


@dataclass(frozen=True)
class Container:
    """A container image a command step runs in (``container=`` on a command step or the
    experiment). ``runtime``: ``apptainer`` (default), ``singularity``, ``podman`` or
    ``docker`` (or a path to one); ``bind``: more host paths to mount at the same place (the
    experiment folder and the run root always are); ``options``: more arguments for the
    runtime (``["--writable-tmpfs"]``)."""

    image: str
    runtime: str = "apptainer"
    bind: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "bind", _strs("container bind", self.bind))
        object.__setattr__(self, "options", _strs("container options", self.options))

    @property
    def kind(self) -> str:
        """Which runtime's command line to write: the runtime's file name."""
        return self.runtime.rstrip("/").rsplit("/", 1)[-1]

    def identity(self) -> str:
        return json.dumps([self.image, self.kind, list(self.bind), list(self.options)])


def _strs(what: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    items = tuple(value or ())
    if not all(isinstance(v, str) for v in items):
        raise SpecError(f"{what} must be a list of strings, got {value!r}")
    return items


@dataclass(frozen=True)
class FileSet:
    """The templates of ``inputs=`` or ``outputs=``: ``(name, template)`` pairs; the names
    are empty when the option was given as a list."""

    items: tuple[tuple[str, str], ...]
    named: bool

    def names(self) -> list[str]:
        return [n for n, _ in self.items if n]


@dataclass(frozen=True)
class Metrics:
    """A command's ``metrics=``: a file template (JSON object, or CSV: last row) or regular
    expressions over its log (last match wins)."""

    file: str | None = None
    patterns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Around:
    """One step's options around its code, the experiment's defaults merged in."""

    inputs: FileSet | None = None
    outputs: FileSet | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    container: Container | None = None
    metrics: Metrics | None = None

    def identity(self) -> dict[str, str]:
        """What enters the step's code identity (so changing it reruns the step), by part;
        empty parts are left out (a step without these options keeps its old identity)."""
        out: dict[str, str] = {}
        if self.vars:
            out["vars"] = json.dumps(dict(self.vars), sort_keys=True, default=str)
        if self.env:
            out["env"] = json.dumps(dict(self.env), sort_keys=True)
        if self.setup:
            out["setup"] = "\n".join(self.setup)
        if self.container is not None:
            out["container"] = self.container.identity()
        if self.outputs is not None:
            out["outputs"] = json.dumps(self.outputs.items)
        if self.metrics is not None:
            out["metrics"] = json.dumps([self.metrics.file, self.metrics.patterns])
        return out


# ---------------------------------------------------------------------- parsing options
def parse_files(step: str, what: str, value: Any) -> FileSet | None:
    """``inputs=``/``outputs=``: a template, a list of templates, or a dict name -> template."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        items = []
        for name, tpl in value.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise SpecError(
                    f"step '{step}': {what}= name {name!r} must be a simple name (letters, "
                    f"digits, _): it becomes the placeholder {{name}}"
                )
            items.append((name, _template(step, what, tpl)))
        named = True
    elif isinstance(value, Sequence) and not isinstance(value, bytes):
        items = [("", _template(step, what, t)) for t in value]
        named = False
    else:
        raise SpecError(
            f"step '{step}': {what}= must be a path template, a list of them, or a dict "
            f"name -> template, got {type(value).__name__}"
        )
    if not items:
        return None
    return FileSet(tuple(items), named)


def _template(step: str, what: str, tpl: Any) -> str:
    if hasattr(tpl, "__fspath__"):
        tpl = str(tpl)
    if not isinstance(tpl, str) or not tpl.strip():
        raise SpecError(f"step '{step}': {what}= holds {tpl!r}; give a path template such as "
                        "'data/sample_{test_set}.txt'")
    if "\0" in tpl:
        raise SpecError(f"step '{step}': {what}= template {tpl!r} holds a NUL byte")
    return tpl


def _named(owner: str, what: str, value: Any, shape: str, name_rule: str) -> list[Any]:
    """The items of a dict option (``vars=``, ``env=``) whose keys are simple names."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise SpecError(f"{owner}: {what}= must be a dict {shape}, got {value!r}")
    for k in value:
        if not isinstance(k, str) or not _NAME.match(k):
            raise SpecError(f"{owner}: {what}= name {k!r} {name_rule}")
    return list(value.items())


def parse_vars(owner: str, value: Any) -> dict[str, Any]:
    """``vars=``: names -> JSON scalars (or paths), usable as ``{name}`` in templates."""
    out: dict[str, Any] = {}
    for k, v in _named(owner, "vars", value, "name -> value", "must be a simple name "
                       "(letters, digits, _): it becomes the placeholder {name}"):
        if hasattr(v, "__fspath__"):
            v = str(v)
        if not isinstance(v, (str, int, float, bool)):
            raise SpecError(f"{owner}: vars {k}={v!r} must be a string, number or bool "
                            f"(got {type(v).__name__})")
        if isinstance(v, str) and "\0" in v:
            raise SpecError(f"{owner}: vars {k}={v!r} holds a NUL byte, which no command "
                            "line can carry; remove it")
        out[k] = v
    return out


def parse_env(owner: str, value: Any) -> dict[str, str]:
    """``env=``: variable -> value template (numbers are written as text)."""
    out: dict[str, str] = {}
    for k, v in _named(owner, "env", value, "NAME -> value", "is not a valid environment "
                       "variable name (letters, digits, _; not starting with a digit)"):
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise SpecError(f"{owner}: env {k}={v!r} must be a string or number")
        text = v if isinstance(v, str) else value_text(v)
        if "\0" in text:
            raise SpecError(f"{owner}: env {k} holds a NUL byte; remove it")
        out[k] = text
    return out


def parse_setup(owner: str, value: Any) -> tuple[str, ...]:
    """``setup=``: shell lines (a string, or a list of lines) run before the task."""
    if value is None:
        return ()
    lines = value.splitlines() if isinstance(value, str) else value
    if not isinstance(lines, Sequence) or not all(isinstance(x, str) for x in lines):
        raise SpecError(f"{owner}: setup= must be shell lines (a string or a list of "
                        f"strings), got {value!r}")
    out = tuple(x.strip() for x in lines if x.strip())
    for x in out:
        if "\0" in x:
            raise SpecError(f"{owner}: setup= line {x!r} holds a NUL byte")
    return out


def parse_container(owner: str, value: Any) -> Container | bool | None:
    """``container=``: an image (``"locator.sif"``), a :class:`Container`, or False (a
    step that runs outside the experiment's container)."""
    if value is None:
        return None
    if value is False:
        return False
    if isinstance(value, str):
        value = Container(value)
    if not isinstance(value, Container):
        raise SpecError(f"{owner}: container= must be an image (e.g. 'locator.sif') or "
                        f"shoal.Container(image, runtime=...), got {value!r}")
    if not value.image.strip():
        raise SpecError(f"{owner}: container= needs an image")
    if any("\0" in x for x in (value.image, value.runtime, *value.bind, *value.options)):
        raise SpecError(f"{owner}: container= holds a NUL byte, which no command line can "
                        "carry; remove it")
    if value.kind not in RUNTIMES:
        raise SpecError(f"{owner}: container runtime {value.runtime!r} is not one shoal "
                        f"knows ({', '.join(RUNTIMES)}); name one of them (or a path to it)")
    return value


def parse_metrics(step: str, value: Any) -> Metrics | None:
    """``metrics=`` of a command step: a file template, or a dict name -> regex."""
    if value is None:
        return None
    if isinstance(value, str) or hasattr(value, "__fspath__"):
        return Metrics(file=_template(step, "metrics", value))
    if not isinstance(value, Mapping) or not value:
        raise SpecError(f"step '{step}': metrics= must be a file template "
                        "('{out}/scores.csv') or a dict name -> regular expression over the "
                        f"task's log, got {value!r}")
    pats = []
    for name, pat in value.items():
        if not isinstance(name, str) or not name:
            raise SpecError(f"step '{step}': metrics= name {name!r} must be a string")
        if not isinstance(pat, str):
            pat = getattr(pat, "pattern", pat)
        if not isinstance(pat, str):
            raise SpecError(f"step '{step}': metrics {name!r} must be a regular expression "
                            f"(a string), got {pat!r}")
        try:
            rx = re.compile(pat, re.MULTILINE)
        except re.error as exc:
            raise SpecError(f"step '{step}': metrics {name!r}: {pat!r} is not a valid "
                            f"regular expression ({exc}); fix the pattern") from None
        if rx.groups > 1:
            raise SpecError(f"step '{step}': metrics {name!r}: {pat!r} has {rx.groups} "
                            "groups; capture the number in one group, e.g. r'loss: (\\S+)'"
                            " (use (?:...) for the others)")
        pats.append((name, pat))
    return Metrics(patterns=tuple(pats))


# ---------------------------------------------------------------------- merging
def resolve(exp_opts: Mapping[str, Any], step_opts: Mapping[str, Any]) -> Around:
    """The step's options with the experiment's defaults (``vars``/``env`` merged, the
    step's winning; ``setup`` lines the experiment's first; ``container``: the step's, else
    the experiment's, ``False`` for none)."""
    container = step_opts.get("container")
    if container is None:
        container = exp_opts.get("container")
    return Around(
        inputs=step_opts.get("inputs"),
        outputs=step_opts.get("outputs"),
        vars={**exp_opts.get("vars", {}), **step_opts.get("vars", {})},
        env={**exp_opts.get("env", {}), **step_opts.get("env", {})},
        setup=(*exp_opts.get("setup", ()), *step_opts.get("setup", ())),
        container=container or None,
        metrics=step_opts.get("metrics"),
    )


# ---------------------------------------------------------------------- templates
class _PathFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec:
            return format(value, format_spec)
        return value_text(value) if isinstance(value, (bool, int, float, str)) else str(value)


_PATHS = _PathFormatter()


def fill(template: str, values: Mapping[str, Any]) -> str:
    """A path or variable template filled with the values as text (not shell-quoted)."""
    return _PATHS.vformat(template, (), values)


def fields(template: str, what: str = "template") -> list[str]:
    """The root names of the ``{fields}`` of a template (SpecError when it does not parse)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SpecError(f"{what} {template!r} does not parse: {exc}") from None
    return [name.split(".", 1)[0].split("[", 1)[0] for _, name, _, _ in parsed
            if name is not None]
