"""The one seam: an engine is a subclass of shoal.backends.base.Backend, and the controller
needs nothing else from it (no undeclared hooks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.backends.base import Backend
from shoal.backends.local.backend import LocalBackend
from shoal.backends.slurm import SlurmBackend
from shoal.plan.build import build_plan
from shoal.schedule.controller import Controller
from shoal.schedule.runreport import RunOptions
from shoal.schedule.slots import Slots
from shoal.spec.loader import load_experiment
from shoal.state.status import Outcome
from shoal.state.store import Store
from shoal.worker.execute import execute
from shoal.worker.taskspec import TaskSpec


class InProcess(Backend):
    """A minimal engine: runs each function task in this process, at once."""

    def __init__(self, exp: Any) -> None:
        self.exp, self.done, self.started = exp, [], 0

    @property
    def running(self) -> int:
        return len(self.done)

    def start(self, specs: list[TaskSpec]) -> None:
        self.started += len(specs)
        self.done.extend(execute(specs, lambda: self.exp))  # the one worker entry

    def poll(self, timeout: float) -> list[Outcome]:
        out, self.done = self.done, []
        return out

    def kill(self, spec: TaskSpec, reason: str, status: str = "failed") -> list[Outcome]:
        return []

    def running_specs(self) -> list[tuple[TaskSpec, float]]:
        return []

    def signal_stop(self, deadline: float) -> None:
        pass

    def shutdown(self) -> None:
        pass


def test_a_backend_is_a_subclass_of_the_seam_and_any_subclass_runs_a_plan(write_exp,
                                                                          tmp_path: Path) -> None:
    assert issubclass(LocalBackend, Backend) and issubclass(SlurmBackend, Backend)
    with pytest.raises(TypeError):
        Backend()  # type: ignore[abstract]
    path = write_exp("""
        exp = shoal.Experiment("seam", grid=shoal.Grid(i=range(5)))

        @exp.step(per=["i"])
        def square(ctx, i):
            return {"v": i * i}

        @exp.gather(over=square)
        def total(ctx, runs):
            return {"sum": int(runs.v.sum())}
    """)
    exp = load_experiment(str(path), {})
    be = InProcess(exp)
    assert be.bundle_size("square", None, 5) is None and be.segments("square", 60.0) == 1
    with Store.open(exp.root, create=True) as store:
        plan = build_plan(exp, exp.root, store=store)
        report = Controller(plan, store, be, Slots.local(2, [], None), RunOptions()).run()
    assert report.done == 6 and be.started == 6
    doc = json.loads((tmp_path / "runs/total/.shoal-result.json").read_text())
    assert doc["metrics"] == {"sum": 30}
    assert build_plan(exp, exp.root).summary()["run"] == 0


def test_an_engine_that_grows_hands_the_controller_more_cpus_gpus_and_memory(
        write_exp) -> None:
    """Backend.grown() (nodes joining a Ray cluster): the controller adds what joined to
    its slots — CPUs, devices and memory, or lifts the memory limit where the engine has
    none (review: memory stayed at the head node's)."""
    import time

    path = write_exp("""
        exp = shoal.Experiment("grow", grid=shoal.Grid(i=range(3)))

        @exp.step(per=["i"])
        def square(ctx, i):
            return {"v": i * i}
    """)
    exp = load_experiment(str(path), {})

    class Growing(InProcess):
        cap: tuple[int, list[str], int | None] = (2, [], 4000)

        def grown(self) -> tuple[int, list[str], int | None]:
            return self.cap

    be = Growing(exp)
    with Store.open(exp.root, create=True) as store:
        plan = build_plan(exp, exp.root, store=store)
        ctl = Controller(plan, store, be, Slots.local(2, [], 4000), RunOptions())
        be.cap = (6, ["ray-gpu0"], 10000)
        ctl._grow(time.time() + 60)
        assert (ctl.total_cpus, ctl.slots.cpus, ctl.slots.mem_mb) == (6, 6, 10000)
        assert ctl.slots.gpus == {"ray-gpu0": 1.0}
        be.cap = (6, ["ray-gpu0"], None)  # (the engine no longer limits memory)
        ctl._grow(time.time() + 120)
        assert ctl.slots.mem_mb is None
        assert ctl.run().done == 3
