"""Task statuses, outcomes and the one retry rule: from the worker to the store to the CLI.

Its members are strings (``TaskStatus.DONE == "done"``), so result files, the store and JSON
hold plain text; ``str()`` and f-strings give the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class TaskStatus(str, Enum):
    """What became of a task's latest attempt (stored), or of one dispatch (reported)."""

    DONE = "done"  # its result file is written: done while its fingerprint holds
    FAILED = "failed"  # its last attempt failed (retries used up)
    INTERRUPTED = "interrupted"  # stopped on request (Ctrl-C, preemption): runs again
    SKIPPED = "skipped"  # not run: an upstream task failed, or an input file is missing
    RUNNING = "running"  # dispatched by a controller that may have died since
    SUBMITTED = "submitted"  # sent to Slurm by --detach; the result files will say
    UNSTARTED = "unstarted"  # reported only: queued behind a task that stopped (no attempt)

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def task_label(step: str, key: str) -> str:
    """``train[site=a,seed=1]``: how a task is named to the user."""
    return f"{step}[{key.replace('/', ',')}]" if key else step


#: What the store may hold.
STORED = tuple(s for s in TaskStatus if s is not TaskStatus.UNSTARTED)


@dataclass(slots=True)
class Outcome:
    """What became of one dispatch of a task: sent by the worker (its result or error
    file's document in ``doc``), or made by a backend that saw the task's job end without
    one; read by the controller, stored."""

    step: str
    key: str
    attempt: int
    status: TaskStatus
    error: str | None = None
    log_tail: str | None = None
    doc: dict[str, Any] | None = None
    #: an interruption may go out again (False: the user cancelled its job)
    may_requeue: bool = True


class Move(str, Enum):
    """What happens to a task after an outcome (:func:`next_move`)."""

    DONE = "done"  # it succeeded: what waited on it may start
    RETRY = "retry"  # it failed with attempts left: run again, using an attempt
    REQUEUE = "requeue"  # interrupted (preempted, requeued, a segment's end): again, free
    STOP = "stop"  # interrupted by a stop of the run: recorded interrupted, runs next time
    FAIL = "fail"  # failed for good (retries used up, or interrupted too often)
    AGAIN = "again"  # never started (queued behind a task that stopped): queue it again


def next_move(status: str, *, attempt: int, max_attempts: int, requeues: int = 0,
              max_requeues: int = 0, stopping: bool = False,
              may_requeue: bool = True) -> Move:
    """The one retry rule, for the controller and for a worker that retries by itself
    (``--detach``). ``attempt``: attempts made so far (this one included); ``requeues``:
    interruptions so far (this one included)."""
    if status == TaskStatus.DONE:
        return Move.DONE
    if status == TaskStatus.UNSTARTED:
        return Move.AGAIN
    if status == TaskStatus.INTERRUPTED and not stopping and may_requeue:
        return Move.REQUEUE if requeues <= max_requeues else Move.FAIL
    if status == TaskStatus.INTERRUPTED or stopping:
        return Move.STOP
    return Move.RETRY if attempt < max_attempts else Move.FAIL
