"""Task statuses: one enum from the worker to the store to the CLI.

Its members are strings (``TaskStatus.DONE == "done"``), so result files, the store and JSON
hold plain text; ``str()`` and f-strings give the value.
"""

from __future__ import annotations

from enum import Enum


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


#: What the store may hold.
STORED = tuple(s for s in TaskStatus if s is not TaskStatus.UNSTARTED)
