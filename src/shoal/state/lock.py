"""One controller per run root: an exclusive ``flock`` on ``<root>/.shoal/lock``."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from shoal.errors import LockedError, ShoalError
from shoal.state.store import STATE_DIR


class RootLock:
    """Held by the controller for the whole run; readers (plan, status) never take it."""

    def __init__(self, root: Path) -> None:
        self.path = root / STATE_DIR / "lock"
        self.fd: int | None = None

    def acquire(self, what: str = "shoal run") -> RootLock:
        try:
            return self._acquire(what)
        except OSError as exc:  # (a full disk, a read-only file system...)
            raise ShoalError(
                f"cannot take the run root's lock {self.path}: {exc.strerror or exc}; free "
                "space on that disk or choose another run root (--root)"
            ) from None

    def _acquire(self, what: str) -> RootLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for tries in range(20):  # (a reader's held_by_other() holds it shared for an
                try:  # instant: `shoal status`, `shoal serve` polling; not a controller)
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if tries == 19:
                        raise
                    time.sleep(0.025)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            readers = "`shoal status`, `shoal plan` and `shoal results`"
            if what != "shoal run":  # (a reader that writes the store: it waits too)
                readers = f"{readers} (without {what.removeprefix('shoal status ')})"
            raise LockedError(
                f"another controller ({holder}) is running on {self.path.parent.parent}; "
                f"{what} needs it to end: wait for it or stop it (Ctrl-C) — {readers} keep "
                "working meanwhile"
            ) from None
        info = {"pid": os.getpid(), "host": os.uname().nodename, "since": time.time(),
                "what": what}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        except OSError:
            os.close(fd)
            raise
        self.fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
            return f"{info.get('what', 'shoal')} pid {info['pid']} on {info['host']} since {since}"
        except (ValueError, KeyError, OSError):
            return "unknown process"

    def held_by_other(self) -> bool:
        """Whether a controller holds the lock now (without taking it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def lost(self) -> str | None:
        """Why this controller no longer holds the root (its lock file was removed or
        replaced, e.g. ``rm -rf runs/.shoal``: a second controller could start), or None."""
        if self.fd is None:
            return None
        try:
            mine, there = os.fstat(self.fd), os.stat(self.path)
        except FileNotFoundError:
            there = None
        except OSError:
            return None
        if there is None or (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
            return (f"{self.path.parent} vanished during the run (its lock and store with "
                    "it), so another `shoal run` could start beside this one: stopping. The "
                    "result files of finished tasks are kept; `shoal status --rescan` rebuilds "
                    "the store, then `shoal run` goes on")
        return None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RootLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
