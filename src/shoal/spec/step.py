"""Step: one unit of work of an experiment, as plain data, and the check of its function's
signature (which parameters shoal fills)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import SpecError
from shoal.spec import around
from shoal.spec.resources import Resources

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
    #: resource options given as a dimension's value (``cpus="{n_threads}"``): option -> dim
    resource_dims: dict[str, str] = field(default_factory=dict)
    #: on Slurm, the nodes one multi-process task's ranks spread over (procs/nodes each)
    nodes: int = 1
    #: a multi-process task with no output on any rank's log and no checkpoint this long
    #: is stuck (a collective that never completes): killed, and failed
    hang_timeout_s: float | None = None
    retries: int | None = None
    version: str | None = None
    pack: tuple[str, ...] = ()
    pack_size: int | None = None
    stage: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: inputs/outputs/vars/env/setup/container/metrics as parsed (see :mod:`shoal.spec.around`)
    opts: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            raise TypeError(f"step '{self.name}' is a shell command, not a function")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<shoal {self.kind} {self.name!r} per={list(self.per)}>"

    @property
    def is_gather(self) -> bool:
        return self.kind == "gather"

    @property
    def procs(self) -> int:
        """Processes per task (ranks); 2 where a dimension gives it (it may exceed 1)."""
        return 2 if "procs" in self.resource_dims else self.resources.procs


def step_options(name: str, *, inputs: Any = None, outputs: Any = None, vars: Any = None,
                 env: Any = None, setup: Any = None, container: Any = None,
                 metrics: Any = None) -> dict[str, Any]:
    """The options of :mod:`shoal.spec.around` a step was declared with, parsed and checked
    (only those given)."""
    owner = f"step '{name}'"
    parsed = {
        "inputs": around.parse_files(name, "inputs", inputs),
        "outputs": around.parse_files(name, "outputs", outputs),
        "vars": around.parse_vars(owner, vars),
        "env": around.parse_env(owner, env),
        "setup": around.parse_setup(owner, setup),
        "container": around.parse_container(owner, container),
        "metrics": around.parse_metrics(name, metrics),
    }
    return {k: v for k, v in parsed.items() if v is not None and v != {} and v != ()}


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


def parse_hang(step: str, procs: Any, hang_timeout: Any) -> float | None:
    """``hang_timeout=`` of a step, checked against its ``procs=``."""
    from shoal.spec.resources import parse_duration

    hang = parse_duration(step, "hang_timeout", hang_timeout)
    if hang is not None and procs == 1:
        raise SpecError(f"step '{step}': hang_timeout= watches the ranks of a multi-process "
                        "task; give procs= > 1, or use timeout= for a single process")
    return hang


def parse_nodes(step: str, procs: Any, nodes: Any) -> int:
    """``nodes=`` of a step: a whole number that divides ``procs=``."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise SpecError(f"step '{step}': nodes={nodes!r} must be a whole number >= 1")
    if nodes > 1 and (not isinstance(procs, int) or procs % nodes):
        raise SpecError(f"step '{step}': nodes={nodes} spreads procs= ranks evenly over the "
                        f"nodes; give procs= a multiple of {nodes} (procs={procs!r})")
    return nodes
