"""The one vocabulary of task states that every view uses: ``shoal plan`` (its subset),
``shoal status``, ``shoal results``, ``shoal report``, ``shoal serve`` and their ``--json``.

A task's state combines what the plan decided (is its result valid for the definition as it
is now?) with what the store last recorded of it.
"""

from __future__ import annotations

from typing import Any

from shoal.plan.build import BLOCKED, CHANGED, DONE, FAILED
from shoal.state.status import TaskStatus

#: the states, in the order views list them, with what each means (the guide's table)
STATES: dict[str, str] = {
    "done": "its result is written and still valid for the definition as it is",
    "running": "a controller is running it now",
    "submitted": "sent to Slurm by --detach; its result file will tell",
    "failed": "its last attempt failed (after its retries); the next run tries again",
    "interrupted": "stopped on request (Ctrl-C, preemption, a time limit); runs again",
    "changed": "it has a result, but its code, version, parameters or inputs changed since",
    "skipped": "not run: a task it needs failed or is blocked",
    "blocked": "cannot run: an input file it reads is missing",
    "missing": "it has not run yet (or its folder was deleted)",
}

_LIVE: dict[str, str] = {str(s): str(s) for s in (
    TaskStatus.RUNNING, TaskStatus.INTERRUPTED, TaskStatus.SKIPPED, TaskStatus.SUBMITTED)}


def task_states(sp: Any, stored: dict[str, str], live: bool | None = None) -> list[str]:
    """The state of every task of the planned step ``sp``: ``stored`` maps a task's key to
    the status the store last recorded; ``live``: whether a controller runs now (False: a
    stored ``running`` is a dead controller's, shown as ``interrupted``; None: unknown)."""
    out: list[str] = []
    for i, key in enumerate(sp.keys):
        st = sp.state[i]
        if st == DONE:
            out.append("done")
        elif st == FAILED:
            out.append("failed")
        elif st == CHANGED:
            out.append("changed")
        elif st == BLOCKED:
            out.append("blocked")
        else:
            got = _LIVE.get(stored.get(key) or "", "missing")
            if got == "running" and live is False:
                got = "interrupted"
            out.append(got)
    return out


def counts(states: list[str]) -> dict[str, int]:
    """Every state's count (zeros included), in the vocabulary's order."""
    out = dict.fromkeys(STATES, 0)
    for s in states:
        out[s] += 1
    return out
