"""Process groups of commands: whether one still has a live member, and ending those that
outlived their command (a shell that exited on SIGTERM, what it ran saving its state)."""

from __future__ import annotations

import contextlib
import os
import signal
import time


def alive(pgid: int) -> bool:
    """Whether the process group ``pgid`` has a member (a zombie counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live(pgids: list[int]) -> list[int]:
    """Those of ``pgids`` with a member that has not exited. Zombies do not count: orphans
    wait for init to reap them, which some container inits do late (Linux: read from
    /proc; elsewhere any member counts)."""
    if not os.path.isdir("/proc/self"):
        return [g for g in pgids if alive(g)]
    wanted, found = set(pgids), set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            state, _, pgrp = stat[stat.rindex(b")") + 2:].split(None, 3)[:3]
        except (OSError, ValueError):
            continue  # (gone meanwhile)
        if state != b"Z" and int(pgrp) in wanted:
            found.add(int(pgrp))
    return [g for g in pgids if g in found]


def end(pgids: list[int], deadline: float) -> None:
    """Give ``pgids`` until ``deadline`` to end, then SIGKILL what is left and wait a moment
    for it to go (also after a Ctrl-C while waiting): nothing a task started goes on
    writing into its folder after the run, where the next one reruns the task."""
    left = list(pgids)
    try:
        left = _wait(left, deadline, 0.05)
    finally:
        for pgid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        _wait(left, time.time() + 2, 0.01)


def _wait(pgids: list[int], until: float, every: float) -> list[int]:
    """Until ``until`` at most, the groups still alive."""
    while pgids and time.time() < until:
        pgids = live(pgids)
        if pgids:
            time.sleep(min(every, max(0.0, until - time.time())))
    return pgids
