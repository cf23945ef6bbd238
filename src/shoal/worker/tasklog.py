"""Task logs: ``<task folder>/.shoal.log``, every attempt's output, made cheap for short tasks
(a scratch file linked or moved into the folder, see :class:`TaskLog`)."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.state import resultfile

if TYPE_CHECKING:
    from shoal.worker.taskspec import TaskSpec

LOG_TAIL_LINES = 30
_NO_LINKS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
             errno.ENOSYS)  # a file system that refuses hard links


def log_tail(out: Path, lines: int = LOG_TAIL_LINES, name: str = resultfile.LOG) -> str:
    """The last lines of a task's log (``name``: another log in that folder)."""
    path = Path(out) / name
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class TaskLog:
    """A task's log file, ``<task folder>/.shoal.log``, appended to by each attempt.

    Creating a file is the costliest thing a trivial task does on many filesystems, so a
    worker keeps one empty scratch file, open, and *hard-links* it into the task folder when
    an attempt starts: the log is live in place while the task runs. If the attempt wrote
    nothing, the link is removed and the scratch file serves the next task; if it wrote, the
    folder keeps the file and a new scratch file is made. Where hard links are refused, the
    scratch file is renamed into the folder and back instead.

    A *deferred* log (``open(defer=True)``, short commands) is not put in place at the
    start: :meth:`place` links it once the task has run a while, and :meth:`close` moves it
    into the folder if the task wrote anything, so that a silent short task costs no link.
    """

    def __init__(self, scratch_dir: str, slot: str = "") -> None:
        self.scratch = f"{scratch_dir}/log-{os.getpid()}{slot}"
        self.scratch_dir = scratch_dir
        self._fd = -1  # open on the scratch file (linking)
        self._links = True  # hard links work here
        self._pending: str | None = None  # the task folder of a deferred log not placed yet
        self._moved = False  # a deferred log placed by renaming (where links are refused)
        self._header = 0  # bytes of the open attempt's header

    def open(
        self, out: str, header: str, new_folder: bool = False, defer: bool = False
    ) -> tuple[int, bool]:
        """Open the log of the task in ``out`` (``new_folder``: made just now, so it has
        none); returns (fd, whether it is a fresh file). ``defer``: a fresh log is put in
        the folder later (see the class), not now.

        Every attempt's output follows its ``header`` (the ``=== ... attempt N ... ===``
        line): a fresh log starts with it, later attempts append it. A fresh log that holds
        nothing more when the attempt ends is not kept (:meth:`close`).
        """
        path = f"{out}/{resultfile.LOG}"
        self._pending, self._moved = None, False
        self._header = len(header.encode())
        if not new_folder and os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            _write(fd, header)
            return fd, False
        fd, fresh = self._open_fresh(out, path, defer)
        _write(fd, header)
        return fd, fresh

    def _open_fresh(self, out: str, path: str, defer: bool) -> tuple[int, bool]:
        if self._links:
            if self._fd < 0:
                self._fd = self._new_scratch()
            if defer:
                self._pending = out
                return self._fd, True
            try:
                try:
                    os.link(self.scratch, path)
                except FileNotFoundError:  # the scratch file went (a new run cleared it)
                    os.close(self._fd)
                    self._fd = self._new_scratch()
                    os.link(self.scratch, path)
                return self._fd, True
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                self._links = False  # (renames from here on; the scratch file stays)
                os.close(self._fd)
                self._fd = -1
        try:
            os.rename(self.scratch, path)
        except FileNotFoundError:  # the first task of this worker: make the scratch file
            os.close(self._new_scratch())
            os.rename(self.scratch, path)
        return os.open(path, os.O_WRONLY | os.O_APPEND), True

    def _new_scratch(self) -> int:
        os.makedirs(self.scratch_dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # (a dead process's, same pid)
            os.unlink(self.scratch)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND  # (read: see _move_into)
        return os.open(self.scratch, flags, 0o644)

    def place(self) -> None:
        """Put a deferred log in its task folder now (best effort: else at :meth:`close`)."""
        out = self._pending
        if out is None:
            return
        path = f"{out}/{resultfile.LOG}"
        try:
            os.link(self.scratch, path)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                return  # (its scratch name went, say: it is moved at close)
            try:
                os.rename(self.scratch, path)
            except OSError:
                return
            self._moved = True
        self._pending = None

    def close(self, fd: int, out: str, fresh: bool, lingering: bool = False) -> None:
        """Close; the folder gets no log when the attempt wrote nothing (and left nothing
        running that could still write: ``lingering``)."""
        # (empty: nothing but its header)
        empty = fresh and not lingering and os.fstat(fd).st_size <= self._header
        if fresh and fd == self._fd:  # the scratch file, linked into the folder (or not yet)
            pending, self._pending = self._pending is not None, None
            moved, self._moved = self._moved, False
            path = f"{out}/{resultfile.LOG}"
            if empty:
                with contextlib.suppress(OSError):
                    if moved:  # (renamed into the folder: back to the scratch slot)
                        os.rename(path, self.scratch)
                    elif not pending:
                        os.unlink(path)
                os.ftruncate(fd, 0)  # (the next task's log starts empty)
                return
            self._fd = -1  # the folder keeps it
            if pending:
                _move_into(self.scratch, fd, path)
            elif not moved:
                with contextlib.suppress(OSError):
                    os.unlink(self.scratch)
        os.close(fd)
        if empty:
            with contextlib.suppress(OSError):
                os.rename(f"{out}/{resultfile.LOG}", self.scratch)
                os.truncate(self.scratch, 0)


def _write(fd: int, header: str) -> None:
    """The attempt's header, best effort: a full disk fails the task's own writes, with
    their error, not this line."""
    if header:
        with contextlib.suppress(OSError):
            os.write(fd, header.encode())


def _move_into(scratch: str, fd: int, path: str) -> None:
    """Move the scratch file open on ``fd`` to ``path`` (a copy of its content where the
    scratch file's name went or cannot be renamed there)."""
    try:
        os.rename(scratch, path)
        return
    except OSError:
        pass
    with contextlib.suppress(OSError), open(path, "ab") as dst:
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            dst.write(chunk)
            offset += len(chunk)


_logs: dict[str, TaskLog] = {}


def task_log(spec: TaskSpec) -> TaskLog:
    scratch = f"{spec.root}/.shoal/scratch"
    log = _logs.get(scratch)
    if log is None:
        log = _logs[scratch] = TaskLog(scratch)
    return log
