"""Run one task anywhere: prepare its folder, set threads, call it, write its result file.

The worker never touches the database. A task is done only once ``.shoal-result.json`` has
been written atomically after the function returned; a failure writes ``.shoal-error.json``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from shoal import resultfile, staging
from shoal.checkpoint import Checkpoints
from shoal.context import Interrupted, Requeue, TaskContext, Upstream
from shoal.spec import Experiment, signature_args
from shoal.taskspec import TaskSpec

KEEP = (resultfile.CHECKPOINTS, resultfile.LOG)  # kept across attempts of a task
LOG_TAIL_LINES = 30
HOST = os.uname().nodename  # (= socket.gethostname(), without importing socket)

_stop_requested = False


def request_stop(*_: Any) -> None:
    """Signal handler: make ``ctx.should_stop()`` true."""
    global _stop_requested
    _stop_requested = True


def stop_requested() -> bool:
    return _stop_requested


def install_stop_handlers() -> None:
    """SIGTERM and SIGUSR2 ask the running task to stop (SIGUSR1 is NCCL's)."""
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, request_stop)


def prepare_folder(out: Path | str) -> bool:
    """A clean task folder: everything from an earlier attempt goes, except kept state
    (checkpoints and the log, which each attempt appends to). True when it was made now
    (so it is empty)."""
    try:
        os.mkdir(out)
        return True
    except FileNotFoundError:
        os.makedirs(out, exist_ok=True)
        return True
    except FileExistsError:
        pass
    for entry in os.scandir(out):
        if entry.name in KEEP:
            continue
        if "=" in entry.name and entry.is_dir():  # a nested task folder of the same step
            continue
        _remove(entry)
    return False


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)


def log_tail(out: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a task's log."""
    path = Path(out) / resultfile.LOG
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

    def open(
        self, out: str, header: str, new_folder: bool = False, defer: bool = False
    ) -> tuple[int, bool]:
        """Open the log of the task in ``out`` (``new_folder``: made just now, so it has
        none); returns (fd, whether it is a fresh file). ``defer``: a fresh log is put in
        the folder later (see the class), not now.

        A fresh log (first attempt) holds the task's output alone; later attempts append
        after a ``=== attempt N ... ===`` line.
        """
        path = f"{out}/{resultfile.LOG}"
        if not new_folder and os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, header.encode())
            return fd, False
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
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                     errno.EOPNOTSUPP, errno.ENOSYS):
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
        if out is not None:
            with contextlib.suppress(OSError):
                os.link(self.scratch, f"{out}/{resultfile.LOG}")
                self._pending = None

    def close(self, fd: int, out: str, fresh: bool, lingering: bool = False) -> None:
        """Close; the folder gets no log when the attempt wrote nothing (and left nothing
        running that could still write: ``lingering``)."""
        empty = fresh and not lingering and os.fstat(fd).st_size == 0
        if fresh and fd == self._fd:  # the scratch file, linked into the folder (or not yet)
            pending, self._pending = self._pending is not None, None
            if empty:
                if not pending:
                    with contextlib.suppress(OSError):
                        os.unlink(f"{out}/{resultfile.LOG}")
                return
            self._fd = -1  # the folder keeps it
            if pending:
                _move_into(self.scratch, fd, f"{out}/{resultfile.LOG}")
            else:
                with contextlib.suppress(OSError):
                    os.unlink(self.scratch)
        os.close(fd)
        if empty:
            with contextlib.suppress(OSError):
                os.rename(f"{out}/{resultfile.LOG}", self.scratch)


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


@contextlib.contextmanager
def redirected_output(spec: TaskSpec, header: str) -> Iterator[None]:
    """Send this process's stdout and stderr (fd 1 and 2, so C code too) to the task log."""
    sys.stdout.flush()
    sys.stderr.flush()
    log = task_log(spec)
    fd, fresh = log.open(spec.out, header)
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.close(fd, spec.out, fresh)


_limited: tuple[int, int] = (0, 0)


def limit_threads(n: int) -> None:
    """Apply the task's thread count in-process: pools created before (by a library a
    previous task imported) ignore the environment. Cheap when nothing changed."""
    global _limited
    state = (n, len(sys.modules))
    if state == _limited:
        return
    _limited = state
    if "threadpoolctl" in sys.modules or any(
        m in sys.modules for m in ("numpy", "scipy", "sklearn")
    ):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            with contextlib.suppress(Exception):
                threadpool_limits(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)


_signatures: dict[int, tuple[tuple[str, ...], bool]] = {}


def _signature(step: Any) -> tuple[tuple[str, ...], bool]:
    key = id(step)
    if key not in _signatures:
        _signatures[key] = signature_args(step, step.per)
    return _signatures[key]


def _runs_frame(spec: TaskSpec) -> Any:
    import pandas as pd

    rows = [r for rows in (spec.gather or {}).values() for r in rows]
    frame = pd.DataFrame(rows)
    return frame


def _metrics(value: Any, out: Path) -> dict[str, Any]:
    if value is None:
        data = resultfile.read_json(out / "metrics.json")
        return data or {}
    if not isinstance(value, dict):
        raise TypeError(
            f"a step function must return a dict of metrics or None, got {type(value).__name__}"
        )
    # must survive JSON: catch it here, with the task, not in the controller
    json.loads(json.dumps(value, default=resultfile._json_default))
    return value


def outcome(spec: TaskSpec, status: str, **extra: Any) -> dict[str, Any]:
    """The message a worker sends back (the result document for done tasks)."""
    return {"step": spec.step, "key": spec.key, "attempt": spec.attempt, "status": status,
            **extra}


def write_failure(
    spec: TaskSpec, status: str, error: str, started: float, ended: float | None = None
) -> dict[str, Any]:
    """Write ``.shoal-error.json`` for a failed or interrupted attempt; return the outcome.
    ``ended``: when the attempt ended (default: now)."""
    out = spec.out
    doc = resultfile.make_result(
        experiment=spec.experiment, step=spec.step, key=spec.key, params=spec.params,
        fingerprint=spec.fingerprint, code=spec.code, inputs=spec.inputs,
        attempt=spec.attempt, started=started, ended=ended or time.time(), host=HOST,
        metrics=None,
    )
    doc["status"] = status
    doc["error"] = error
    doc["token"] = spec.token
    doc["log_tail"] = log_tail(Path(out))
    with contextlib.suppress(OSError):
        resultfile.write_json_atomic(f"{out}/{resultfile.ERROR}", doc)
    return outcome(spec, status, error=error, log_tail=doc["log_tail"], doc=doc)


def write_success(
    spec: TaskSpec, metrics: dict[str, Any], started: float,
    names: Collection[str] | None = None, ended: float | None = None,
) -> dict[str, Any]:
    """Write ``.shoal-result.json`` (the task is done from here on); return the outcome.
    ``names``: where the caller knows, which of shoal's files the task folder holds (an old
    error file, checkpoints); None: look."""
    doc = resultfile.make_result(
        experiment=spec.experiment, step=spec.step, key=spec.key, params=spec.params,
        fingerprint=spec.fingerprint, code=spec.code, inputs=spec.inputs,
        attempt=spec.attempt, started=started, ended=ended or time.time(), host=HOST,
        metrics=metrics,
    )
    doc["token"] = spec.token
    if names is None or resultfile.ERROR in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{spec.out}/{resultfile.ERROR}")
    resultfile.write_json_atomic(f"{spec.out}/{resultfile.RESULT}", doc)
    ckpt = f"{spec.out}/{resultfile.CHECKPOINTS}"
    if (names is None or resultfile.CHECKPOINTS in names) and os.path.isdir(ckpt):
        shutil.rmtree(ckpt, ignore_errors=True)  # done: a rerun must not resume from them
    return outcome(spec, "done", doc=doc)


_env_set: dict[str, str] = {}


def _apply_env(env: dict[str, str]) -> None:
    for k, v in env.items():
        if _env_set.get(k) != v:
            os.environ[k] = v
            _env_set[k] = v


def run_function(
    spec: TaskSpec, exp: Experiment, should_stop: Callable[[], bool] = stop_requested
) -> dict[str, Any]:
    """Run a function task in this process; never raises for task errors."""
    started = time.time()
    try:
        prepare_folder(spec.out)
    except OSError as exc:
        return outcome(spec, "failed", error=f"cannot prepare task folder {spec.out}: {exc}")
    out = Path(spec.out)
    header = f"=== {spec.label} attempt {spec.attempt} on {HOST} at {time.ctime(started)} ===\n"
    step = exp.steps[spec.step]
    with redirected_output(spec, header):
        try:
            _apply_env(spec.env())
            limit_threads(spec.cpus)
            staged = staging.stage(spec.stage, spec.stage_dir) if spec.stage else {}
            ctx = TaskContext(
                step=spec.step, params=dict(spec.params), out=out, threads=spec.cpus,
                device=spec.device, attempt=spec.attempt, root=Path(spec.root),
                upstream={
                    name: Upstream(name, u["params"], Path(u["out"]), u["result"])
                    for name, u in spec.needs.items()
                },
                checkpoint=Checkpoints(out, spec.fingerprint),
                _stop=should_stop, _staged=staged,
            )
            takes, wants_runs = _signature(step)
            kwargs = {d: spec.params[d] for d in takes}
            if wants_runs:
                kwargs["runs"] = _runs_frame(spec)
            assert step.fn is not None
            value = step.fn(ctx, **kwargs)
            if value is Requeue:
                raise Interrupted("the task returned shoal.Requeue")
            metrics = _metrics(value, out)
        except Interrupted as exc:
            print(f"interrupted: {exc}", file=sys.stderr)
            status, error = "interrupted", f"Interrupted: {exc}"
        except BaseException as exc:  # a task error (even SystemExit) must not kill the worker
            traceback.print_exc()
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            status, error = "done", ""
    if status == "done":
        try:
            return write_success(spec, metrics, started)
        except Exception as exc:
            return write_failure(spec, "failed", f"cannot write result: {exc}", started)
    return write_failure(spec, status, error, started)
