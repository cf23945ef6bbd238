"""The one seam between the controller and an engine that runs tasks.

The controller (:mod:`shoal.schedule.controller`) hands a backend task specs
(:meth:`Backend.start`),
collects their outcomes (:meth:`Backend.poll`), and asks it to stop, kill and shut down.
Everything a backend may do differently is declared here — abstract, or with a default that
means "not supported" — so that the controller reads no undeclared hooks. A new engine is a
subclass plus the worker entry that runs a spec where the engine puts it.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from shoal.state.status import Outcome, TaskStatus
from shoal.worker.taskspec import TaskSpec


class Backend(abc.ABC):
    """An engine that runs task specs and reports their outcomes."""

    #: It chooses each task's GPUs (``CUDA_VISIBLE_DEVICES``); False: the cluster's
    #: scheduler sets them, and the controller hands out no devices.
    assigns_devices: ClassVar[bool] = True
    #: ``stage=`` archives unpack in node-local scratch (a cluster), not in the run root.
    stages_on_node: ClassVar[bool] = False
    #: :meth:`start` only queues; :meth:`poll` submits (the controller records the tasks as
    #: running before that, so that a crash in between loses none).
    defers_start: ClassVar[bool] = False
    #: It can run a whole plan that no process follows (``--detach``):
    #: :meth:`submit_detached`.
    detaches: ClassVar[bool] = False
    #: Its name on the command line (``--backend NAME``).
    name: ClassVar[str] = "?"
    #: Calls to the engine that started work (e.g. ``sbatch``), for reports.
    submissions: int = 0

    @property
    @abc.abstractmethod
    def running(self) -> int:
        """Tasks started and not yet reported."""

    @abc.abstractmethod
    def start(self, specs: list[TaskSpec]) -> None:
        """Run ``specs`` (one slot's worth: one task, a bundle of short ones, or the members
        of a pack), one after the other in one place."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[Outcome]:
        """Outcomes that arrived (waiting up to ``timeout`` seconds for the first)."""

    @abc.abstractmethod
    def kill(self, spec: TaskSpec, reason: str,
             status: str = TaskStatus.FAILED) -> list[Outcome]:
        """End a running task at once; outcomes known now (others come through poll)."""

    @abc.abstractmethod
    def running_specs(self) -> list[tuple[TaskSpec, float]]:
        """The running tasks and when each started."""

    @abc.abstractmethod
    def signal_stop(self, deadline: float) -> None:
        """Ask every running task to stop (checkpoint, requeue); what still runs at
        ``deadline`` is killed by :meth:`shutdown`."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Start nothing more; end what runs; free the engine's resources."""

    def grown(self) -> tuple[int, list[str], int | None] | None:
        """The engine's capacity now where it can grow while a run goes on (nodes join a
        Ray cluster): CPUs, device names and memory (MiB; None: not limited), looked at
        every few seconds; None: fixed."""
        return None

    def bundle_size(self, step: str, time_s: float | None, queued: int) -> int | None:
        """How many of a step's ``queued`` tasks one slot takes at once, by the engine's own
        rule (a cluster: tasks per job); None: the controller's rule (bundles of short tasks
        as measured in this run)."""
        return None

    def segments(self, step: str, time_s: float | None) -> int:
        """Jobs one task of the step takes (a task longer than the engine's longest job runs
        as chained segments); 1 where jobs have no time limit."""
        return 1

    def submit_detached(self, step: str, bundles: list[list[TaskSpec]],
                        after: list[str]) -> list[str]:
        """Submit one step's ``bundles`` to start once everything this backend submitted
        for the steps ``after`` has ended, and do not follow them (``--detach``); returns
        the engine's ids of what it submitted. Only where :attr:`detaches`."""
        raise NotImplementedError(f"the {self.name} backend cannot run detached")
