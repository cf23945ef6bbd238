"""The planned tasks of an experiment, as data: parallel lists per step, edges, states.

Built by :mod:`shoal.plan.build` (expansion) and filled by :mod:`shoal.plan.decide`
(what runs, why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from shoal.plan.taskfiles import StepFiles
from shoal.spec.experiment import Experiment, Step
from shoal.spec.grid import Point, Value
from shoal.spec.resources import Resources, for_task
from shoal.state.status import task_label

DONE, MISSING, FAILED, CHANGED, BLOCKED = 0, 1, 2, 3, 4
REASONS = ("done", "missing", "failed", "changed", "blocked")  # blocked: an input is missing


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
    files: StepFiles | None = None  # inputs= and outputs= per task
    _resources: dict[tuple[Any, ...], Resources] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.step.name

    def resources(self, i: int) -> Resources:
        """What task ``i`` occupies: the step's resources, with those given as a
        dimension's value (``cpus="{n_threads}"``) taken from the task's params."""
        dims = self.step.resource_dims
        if not dims:
            return self.step.resources
        cache = self._resources
        point = tuple(self.params[i][self.dims.index(d)] for d in dims.values())
        got = cache.get(point)
        if got is None:
            got = cache[point] = for_task(self.name, self.step.resources, dims,
                                          dict(zip(dims.values(), point)))
        return got

    def shapes(self) -> set[Resources]:
        """Every distinct :meth:`resources` of the step's tasks to run."""
        if not self.step.resource_dims:
            return {self.step.resources}
        return {self.resources(i) for i, s in enumerate(self.state) if s != DONE}

    def __len__(self) -> int:
        return len(self.keys)

    def label(self, i: int) -> str:
        """``train[site=a,seed=1]``: how task ``i`` is named to the user."""
        return task_label(self.name, self.keys[i])

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
        """``{"total", "done", "run", "blocked", "reasons": {...}}`` over the included
        tasks (blocked tasks lack an input: they cannot run)."""
        c = [0, 0, 0, 0, 0]
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
            "run": total - c[DONE] - c[BLOCKED],
            "blocked": c[BLOCKED],
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
            "blocked": sum(s["blocked"] for s in steps.values()),
            "steps": steps,
        }

    def to_run(self) -> list[tuple[StepPlan, int]]:
        """Every included task that is not done (nor blocked), in dependency order."""
        return [
            (sp, i)
            for sp in self.steps.values()
            for i, s in enumerate(sp.state)
            if s != DONE and s != BLOCKED and sp.is_included(i)
        ]

    def blocked(self) -> list[tuple[StepPlan, int]]:
        """Included tasks that cannot run: an input file is missing (the reason in
        ``detail``)."""
        return [(sp, i) for sp in self.steps.values() if sp.files is not None
                for i in sp.files.missing if sp.is_included(i)]

    def task_label(self, sp: StepPlan, i: int) -> str:
        return sp.label(i)


