"""Experiment and Step: the definition a user writes, as plain data.

Nothing here touches files or processes. :meth:`Experiment.validate` checks the whole
definition and raises one :class:`~shoal.errors.SpecError` naming the step, the dimension
and the fix; the planner calls it before anything else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.errors import SpecError
from shoal.spec import around
from shoal.spec.around import Container
from shoal.spec.grid import Grid
from shoal.spec.question import MetricInfo, Question
from shoal.spec.question import make as make_question
from shoal.spec.resources import parse_duration, parse_resources
from shoal.spec.step import (
    _STEP_NAME,
    Step,
    _names,
    _refs,
    parse_hang,
    parse_nodes,
    signature_args,
    step_options,
)

__all__ = ["Experiment", "Step", "signature_args"]


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
        vars: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        setup: str | Sequence[str] | None = None,
        container: str | Container | None = None,
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
        owner = f"experiment '{name}'"
        #: defaults of every step: vars, env, setup lines, container (see shoal.spec.around)
        self.options: dict[str, Any] = {
            "vars": around.parse_vars(owner, vars), "env": around.parse_env(owner, env),
            "setup": around.parse_setup(owner, setup),
            "container": around.parse_container(owner, container) or None,
        }
        caller = sys._getframe(1).f_globals.get("__file__")
        self.source: Path | None = Path(caller).resolve() if caller else None
        self._root = Path(root) if root is not None else None
        self.config: dict[str, Any] = {}
        self.target: str | None = None  # how workers re-import it (set by the loader)
        self._registered: list[Step] = []
        self._validated: list[Step] | None = None
        self._around: dict[str, around.Around] = {}
        #: notes from checking the definition (printed by plan and run)
        self.warnings: list[str] = []
        #: what the results answer (``question``) and what the metrics are (``metric``)
        self.headline: Question | None = None
        self.metrics: dict[str, MetricInfo] = {}

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
        self._around.clear()
        return step

    def around(self, step: Step | str) -> around.Around:
        """The step's inputs, outputs, vars, env, setup lines, container and metrics, with
        the experiment's defaults merged in."""
        s = self.steps[step] if isinstance(step, str) else step
        got = self._around.get(s.name)
        if got is None:
            got = self._around[s.name] = around.resolve(self.options, s.opts)
        return got

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        per: str | Sequence[str] | None = None,
        needs: Any = None,
        name: str | None = None,
        cpus: int | str = 1,
        gpus: float | str = 0,
        mem: str | int | None = None,
        time: str | int | float | None = None,
        timeout: str | int | float | None = None,
        retries: int | None = None,
        version: str | int | None = None,
        pack: str | Sequence[str] | None = None,
        pack_size: int | None = None,
        stage: str | Sequence[str] | None = None,
        inputs: Any = None,
        outputs: Any = None,
        vars: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        setup: str | Sequence[str] | None = None,
        procs: int | str = 1,
        hang_timeout: str | int | float | None = None,
        nodes: int = 1,
    ) -> Any:
        """Declare a function step: ``@exp.step(per=["site"], needs=[prep], cpus=1)``.

        The function is called as ``fn(ctx, **params)`` once per task and may return a dict of
        JSON-serialisable metrics. ``inputs=``/``outputs=``: files it reads (their contents
        enter the fingerprint) and paths outside its folder it owns; ``vars=``, ``env=``,
        ``setup=``: see the guide. ``procs=N``: each task runs as N processes (ranks, with
        torch.distributed's variables and a free port of its own); rank 0's return value is
        the result; ``cpus=`` is per rank, ``gpus=`` per task; ``hang_timeout=``: kill a
        task whose ranks went silent that long; ``nodes=K``: on Slurm, spread the ranks
        over K nodes (procs/K each).
        """
        opts = dict(inputs=inputs, outputs=outputs, vars=vars, env=env, setup=setup)

        def deco(f: Callable[..., Any]) -> Step:
            sname = name or f.__name__
            return self._add(
                Step(
                    name=sname,
                    per=_names(sname, "per", per),
                    fn=f,
                    needs=_refs(sname, "needs", needs),
                    **_resources(sname, cpus, gpus, mem, time, procs, hang_timeout, nodes),
                    timeout_s=parse_duration(sname, "timeout", timeout),
                    retries=retries,
                    version=None if version is None else str(version),
                    pack=_names(sname, "pack", pack),
                    pack_size=pack_size,
                    stage=(stage,) if isinstance(stage, str) else tuple(stage or ()),
                    opts=step_options(sname, **opts),
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
        cpus: int | str = 1,
        gpus: float | str = 0,
        mem: str | int | None = None,
        time: str | int | float | None = None,
        timeout: str | int | float | None = None,
        retries: int | None = None,
        version: str | int | None = None,
        inputs: Any = None,
        outputs: Any = None,
        vars: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        setup: str | Sequence[str] | None = None,
    ) -> Any:
        """Declare a gather: one task per point of ``per`` receiving every upstream task of
        ``over`` that projects onto it, as a DataFrame ``runs`` (params, metrics, ``out``).

        ``select={"partition": "validation"}`` keeps only a slice of the upstream tasks.
        """
        opts = dict(inputs=inputs, outputs=outputs, vars=vars, env=env, setup=setup)

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
                    **_resources(sname, cpus, gpus, mem, time),
                    timeout_s=parse_duration(sname, "timeout", timeout),
                    retries=retries,
                    version=None if version is None else str(version),
                    opts=step_options(sname, **opts),
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
        cpus: int | str = 1,
        gpus: float | str = 0,
        mem: str | int | None = None,
        time: str | int | float | None = None,
        timeout: str | int | float | None = None,
        retries: int | None = None,
        version: str | int | None = None,
        stage: str | Sequence[str] | None = None,
        inputs: Any = None,
        outputs: Any = None,
        vars: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        setup: str | Sequence[str] | None = None,
        container: str | Container | bool | None = None,
        metrics: str | Mapping[str, str] | None = None,
        procs: int | str = 1,
        hang_timeout: str | int | float | None = None,
        nodes: int = 1,
    ) -> Step:
        """Declare a shell-command step. ``{dim}`` fields take the task's values (shell-quoted),
        ``{out}`` its folder, ``{threads}`` its cpus, ``{device}``/``{gpus}`` its GPU,
        ``{python}`` the Python running shoal, ``{<upstream step>}`` that task's folder,
        ``{<var>}`` a value of ``vars=``, ``{<input name>}``/``{inputs}``, ``{outputs}`` the
        files of ``inputs=``/``outputs=``. The command runs in the experiment's folder (in
        ``container=`` if given, after the ``setup=`` lines); its metrics come from
        ``metrics=`` (a file, or patterns over its log), else from ``{out}/metrics.json``.
        ``procs=N`` starts N copies with torch.distributed's variables (``RANK``,
        ``WORLD_SIZE``, ``MASTER_PORT``…), as ``srun`` would — unless the template uses
        ``{procs}``: then it starts its own ranks (``torchrun --nproc-per-node {procs}
        --master-port {port}``) and runs once, with the resources of N ranks. ``{port}``
        (the task's own free port), ``{master_addr}`` and ``{nodes}`` serve both.
        """
        if not isinstance(template, str) or not template.strip():
            raise SpecError(f"step '{name}': the command template must be a non-empty string")
        return self._add(
            Step(
                name=name,
                per=_names(name, "per", per),
                command=template,
                needs=_refs(name, "needs", needs),
                **_resources(name, cpus, gpus, mem, time, procs, hang_timeout, nodes),
                timeout_s=parse_duration(name, "timeout", timeout),
                retries=retries,
                version=None if version is None else str(version),
                stage=(stage,) if isinstance(stage, str) else tuple(stage or ()),
                opts=step_options(name, inputs=inputs, outputs=outputs, vars=vars, env=env,
                                  setup=setup, container=container, metrics=metrics),
            )
        )

    # ----------------------------------------------------------------- results
    def question(
        self, step: Step | str, *, metric: str, x: str,
        replicates: str | Sequence[str] | None = None,
        blocks: str | Sequence[str] | None = None, baseline: Any = None,
        split: str | None = None, higher_is_better: bool | None = None,
    ) -> Question:
        """What the experiment asks: ``metric`` of ``step`` against dimension ``x``, with
        ``replicates`` (e.g. ``"seed"``) averaged within each block (the step's other
        dimensions, e.g. sites) and, with ``baseline``, every level compared with that one
        paired on blocks and replicates. ``shoal report`` opens with the answer, ``shoal
        results --headline`` prints it (see :mod:`shoal.spec.question`)."""
        self.headline = make_question(step, metric, x, replicates, blocks, baseline, split,
                                      higher_is_better)
        self._validated = None
        return self.headline

    def metric(self, name: str, *, label: str | None = None, unit: str | None = None,
               higher_is_better: bool | None = None) -> MetricInfo:
        """Describe a metric: its label and unit on plots and tables, and which way is
        better (the report's comparisons say "improves" or "worsens" by it)."""
        if not isinstance(name, str) or not name:
            raise SpecError("exp.metric(name, ...): give the metric's name as a string")
        self.metrics[name] = info = MetricInfo(label, unit, higher_is_better)
        return info

    # ----------------------------------------------------------------- checking
    def validate(self) -> list[Step]:
        """Check the definition; return the steps in dependency order."""
        if self._validated is None:
            from shoal.spec.validate import validate

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

    def __repr__(self) -> str:
        return f"<shoal.Experiment {self.name!r}: {len(self._registered)} steps, {self.grid!r}>"


def _resources(step: str, cpus: Any, gpus: Any, mem: Any, time: Any, procs: Any = 1,
               hang_timeout: Any = None, nodes: Any = 1) -> dict[str, Any]:
    """A step's resources (options may name a dimension), its hang_timeout and nodes."""
    resources, dims = parse_resources(step, cpus=cpus, gpus=gpus, mem=mem, time=time,
                                      procs=procs)
    return {"resources": resources, "resource_dims": dims,
            "hang_timeout_s": parse_hang(step, procs, hang_timeout),
            "nodes": parse_nodes(step, procs, nodes)}
