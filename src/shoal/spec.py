"""Experiment and Step: the definition a user writes, as plain data.

Nothing here touches files or processes. :meth:`Experiment.validate` checks the whole
definition and raises one :class:`~shoal.errors.SpecError` naming the step, the dimension
and the fix; the planner calls it before anything else.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.errors import SpecError
from shoal.grid import Grid, Value
from shoal.resources import Resources, parse_duration

if TYPE_CHECKING:
    from shoal.plan import Plan

_STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(eq=False)
class Step:
    """One unit of work, declared over a subset of the grid's dimensions (``per``).

    Built by :meth:`Experiment.step`, :meth:`Experiment.gather` and
    :meth:`Experiment.command`. Calling a step calls its function.
    """

    name: str
    per: tuple[str, ...]
    kind: str = "step"  # "step" | "gather"
    fn: Callable[..., Any] | None = None
    command: str | None = None
    needs: tuple[Step | str, ...] = ()
    over: tuple[Step | str, ...] = ()
    select: Mapping[str, Any] | None = None
    allow_missing: bool = False
    resources: Resources = field(default_factory=Resources)
    timeout_s: float | None = None
    retries: int | None = None
    version: str | None = None
    pack: tuple[str, ...] = ()
    pack_size: int | None = None
    stage: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            raise TypeError(f"step '{self.name}' is a shell command, not a function")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<shoal {self.kind} {self.name!r} per={list(self.per)}>"

    @property
    def is_gather(self) -> bool:
        return self.kind == "gather"


def _names(step: str, what: str, value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"step '{step}': {what}= must be a list of dimension names, got {value!r}")
    out = tuple(value)
    if len(set(out)) != len(out):
        raise SpecError(f"step '{step}': {what}={list(out)} names a dimension twice")
    return out


def _refs(step: str, what: str, value: Any) -> tuple[Step | str, ...]:
    if value is None:
        return ()
    if isinstance(value, (Step, str)):
        return (value,)
    if isinstance(value, Iterable):
        out = tuple(value)
        for v in out:
            if not isinstance(v, (Step, str)):
                raise SpecError(
                    f"step '{step}': {what}= must list steps (the decorated functions) or step "
                    f"names, got {v!r}"
                )
        return out
    raise SpecError(f"step '{step}': {what}= must list steps, got {value!r}")


class Experiment:
    """A grid of parameters and the steps to run over it.

    ``root`` is where task folders and the state store live (default: ``runs/`` beside the
    file that defines the experiment; the CLI's ``--root`` and ``$SHOAL_ROOT`` override it).
    """

    def __init__(
        self,
        name: str,
        grid: Grid,
        *,
        root: str | Path | None = None,
        retries: int = 0,
        stage: Sequence[str] | str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _STEP_NAME.match(name):
            raise SpecError(
                f"experiment name {name!r} must be a simple name (letters, digits, _ and -)"
            )
        if not isinstance(grid, Grid):
            raise SpecError(
                f"experiment '{name}': grid= must be a shoal.Grid(...), got {type(grid).__name__}"
            )
        self.name = name
        self.grid = grid
        self.retries = retries
        self.stage = (stage,) if isinstance(stage, str) else tuple(stage or ())
        caller = sys._getframe(1).f_globals.get("__file__")
        self.source: Path | None = Path(caller).resolve() if caller else None
        self._root = Path(root) if root is not None else None
        self.config: dict[str, Any] = {}
        self.target: str | None = None  # how workers re-import it (set by the loader)
        self._registered: list[Step] = []
        self._validated: list[Step] | None = None

    # ----------------------------------------------------------------- definition
    @property
    def root(self) -> Path:
        """The run root: task folders ``<root>/<step>/...`` and the store ``<root>/.shoal``."""
        if self._root is not None:
            base = self.source.parent if self.source and not self._root.is_absolute() else None
            return (base / self._root) if base else self._root
        return (self.source.parent if self.source else Path.cwd()) / "runs"

    @root.setter
    def root(self, value: str | Path) -> None:
        self._root = Path(value).resolve()

    @property
    def steps(self) -> dict[str, Step]:
        """Registered steps by name, in definition order."""
        return {s.name: s for s in self._registered}

    def _add(self, step: Step) -> Step:
        self._registered.append(step)
        self._validated = None
        return step

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        per: str | Sequence[str] | None = None,
        needs: Any = None,
        name: str | None = None,
        cpus: int = 1,
        gpus: float = 0,
        mem: str | int | None = None,
        time: str | int | float | None = None,
        timeout: str | int | float | None = None,
        retries: int | None = None,
        version: str | int | None = None,
        pack: str | Sequence[str] | None = None,
        pack_size: int | None = None,
        stage: str | Sequence[str] | None = None,
    ) -> Any:
        """Declare a function step: ``@exp.step(per=["site"], needs=[prep], cpus=1)``.

        The function is called as ``fn(ctx, **params)`` once per task and may return a dict of
        JSON-serialisable metrics.
        """

        def deco(f: Callable[..., Any]) -> Step:
            sname = name or f.__name__
            return self._add(
                Step(
                    name=sname,
                    per=_names(sname, "per", per),
                    fn=f,
                    needs=_refs(sname, "needs", needs),
                    resources=Resources.parse(sname, cpus, gpus, mem, time),
                    timeout_s=parse_duration(sname, "timeout", timeout),
                    retries=retries,
                    version=None if version is None else str(version),
                    pack=_names(sname, "pack", pack),
                    pack_size=pack_size,
                    stage=(stage,) if isinstance(stage, str) else tuple(stage or ()),
                )
            )

        return deco(fn) if fn is not None else deco

    def gather(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        over: Any,
        per: str | Sequence[str] | None = None,
        select: Mapping[str, Any] | None = None,
        needs: Any = None,
        allow_missing: bool = False,
        name: str | None = None,
        cpus: int = 1,
        gpus: float = 0,
        mem: str | int | None = None,
        time: str | int | float | None = None,
        timeout: str | int | float | None = None,
        retries: int | None = None,
        version: str | int | None = None,
    ) -> Any:
        """Declare a gather: one task per point of ``per`` receiving every upstream task of
        ``over`` that projects onto it, as a DataFrame ``runs`` (params, metrics, ``out``).

        ``select={"partition": "validation"}`` keeps only a slice of the upstream tasks.
        """

        def deco(f: Callable[..., Any]) -> Step:
            sname = name or f.__name__
            return self._add(
                Step(
                    name=sname,
                    per=_names(sname, "per", per),
                    kind="gather",
                    fn=f,
                    needs=_refs(sname, "needs", needs),
                    over=_refs(sname, "over", over),
                    select=dict(select) if select else None,
                    allow_missing=bool(allow_missing),
                    resources=Resources.parse(sname, cpus, gpus, mem, time),
                    timeout_s=parse_duration(sname, "timeout", timeout),
                    retries=retries,
                    version=None if version is None else str(version),
                )
            )

        return deco(fn) if fn is not None else deco

    def command(
        self,
        name: str,
        template: str,
        *,
        per: str | Sequence[str] | None = None,
        needs: Any = None,
        cpus: int = 1,
        gpus: float = 0,
        mem: str | int | None = None,
        time: str | int | float | None = None,
        timeout: str | int | float | None = None,
        retries: int | None = None,
        version: str | int | None = None,
        stage: str | Sequence[str] | None = None,
    ) -> Step:
        """Declare a shell-command step. ``{dim}`` fields take the task's values (shell-quoted),
        ``{out}`` its folder, ``{threads}`` its cpus, ``{device}``/``{gpus}`` its GPU,
        ``{python}`` the Python running shoal, ``{<upstream step>}`` that task's folder.
        The command runs in the experiment's folder; if it writes ``{out}/metrics.json``,
        those are its metrics.
        """
        if not isinstance(template, str) or not template.strip():
            raise SpecError(f"step '{name}': the command template must be a non-empty string")
        return self._add(
            Step(
                name=name,
                per=_names(name, "per", per),
                command=template,
                needs=_refs(name, "needs", needs),
                resources=Resources.parse(name, cpus, gpus, mem, time),
                timeout_s=parse_duration(name, "timeout", timeout),
                retries=retries,
                version=None if version is None else str(version),
                stage=(stage,) if isinstance(stage, str) else tuple(stage or ()),
            )
        )

    # ----------------------------------------------------------------- checking
    def validate(self) -> list[Step]:
        """Check the definition; return the steps in dependency order."""
        if self._validated is None:
            from shoal.validate import validate

            self._validated = validate(self)
        return self._validated

    def resolve(self, ref: Step | str, *, by: str = "", what: str = "needs") -> Step:
        """The registered step a reference (step object or name) points to."""
        steps = self.steps
        if isinstance(ref, Step):
            if steps.get(ref.name) is ref:
                return ref
            raise SpecError(
                f"step '{by}': {what}= names step '{ref.name}', which belongs to another "
                "experiment; declare it on this experiment"
            )
        if ref in steps:
            return steps[ref]
        raise SpecError(
            f"step '{by}': {what}= names unknown step '{ref}'; known steps: "
            f"{', '.join(steps) or '(none)'}"
        )

    # ----------------------------------------------------------------- planning
    def plan(
        self,
        only: Mapping[str, Sequence[Value]] | None = None,
        root: str | Path | None = None,
    ) -> Plan:
        """Expand the steps over the grid and decide what would run (reads the store)."""
        from shoal.plan import build_plan

        return build_plan(self, root=Path(root) if root else self.root, only=only)

    def run(self, **options: Any) -> Any:
        """Run what the plan says must run (see :func:`shoal.runner.run_experiment`)."""
        from shoal.runner import run_experiment

        return run_experiment(self, **options)

    def results(self, step: str | None = None) -> Any:
        """A pandas DataFrame, one row per task of ``step``: params, status, attempts,
        duration, started/ended, host, metrics and ``out`` (the task folder)."""
        from shoal.results import results

        return results(self, step)

    def summary(
        self, step: str | None = None, by: Sequence[str] | str = (),
        metric: Sequence[str] | str | None = None, level: float = 0.95,
    ) -> Any:
        """Summaries per group of ``by`` across the other dimensions (n, mean, std, sem,
        t-based CI, median, min, max, and the group's missing and failed counts)."""
        from shoal.results import summary

        by = [by] if isinstance(by, str) else list(by)
        metrics = [metric] if isinstance(metric, str) else metric
        return summary(self, step, by=by, metrics=metrics, level=level)

    def __repr__(self) -> str:
        return f"<shoal.Experiment {self.name!r}: {len(self._registered)} steps, {self.grid!r}>"


def signature_args(step: Step, dims: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """Which of ``dims`` the step function accepts by name, and whether it takes ``runs``.

    Raises a SpecError for a required parameter shoal cannot fill.
    """
    assert step.fn is not None
    fn = step.fn
    kind = ("an async function" if inspect.iscoroutinefunction(fn)
            or inspect.isasyncgenfunction(fn) else
            "a generator (it yields)" if inspect.isgeneratorfunction(fn) else None)
    if kind:
        raise SpecError(f"step '{step.name}': its function is {kind}; a step function runs "
                        "once and returns its metrics (a dict) or None: make it a plain def")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return tuple(dims), step.is_gather
    params = list(sig.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    usage = f"def {getattr(fn, '__name__', step.name)}(ctx, {', '.join(dims)})"
    if not params or params[0].kind not in positional:
        raise SpecError(
            f"step '{step.name}': its function must take the task context first: {usage}"
        )
    if params[0].name in dims and params[0].name not in {p.name for p in params[1:]}:
        raise SpecError(
            f"step '{step.name}': its first parameter '{params[0].name}' is a dimension, but "
            f"the first parameter receives the task context: {usage}"
        )
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    names = {p.name for p in params[1:]}
    allowed = set(dims) | ({"runs"} if step.is_gather else set())
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name not in allowed and p.default is p.empty:
            hint = f"per={list(step.per)}" + (" (and runs)" if step.is_gather else "")
            raise SpecError(
                f"step '{step.name}': function parameter '{p.name}' is not a dimension of the "
                f"step ({hint}); add '{p.name}' to per=, give it a default, or remove it"
            )
    takes = tuple(d for d in dims if var_kw or d in names)
    return takes, step.is_gather and (var_kw or "runs" in names)
