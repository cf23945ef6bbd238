"""Command steps: spawn the rendered command (``posix_spawn``) with the task's environment
and log, wait, and write its result or error file. Used by the local backend's command
threads and by Slurm array elements."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from typing import Any

from shoal.context.checkpoint import Checkpoints
from shoal.errors import ShoalError
from shoal.state import resultfile
from shoal.state.resultfile import HOST
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import cmetrics, staging
from shoal.worker import task as W
from shoal.worker.spawn import spawn, wait_exited
from shoal.worker.task import outcome, write_failure, write_success
from shoal.worker.taskfolder import missing_output, prepare_task
from shoal.worker.tasklog import TaskLog, task_log
from shoal.worker.taskspec import TaskSpec
from shoal.worker.wrap import SETUP_FAILED

METRICS = resultfile.METRICS  # what a command writes to report its metrics
_child: int | None = None
_which_cache: dict[tuple[str, str], str] = {}


def _which(program: str, env: dict[str, str]) -> str:
    """The program's path, looked up once per PATH (posix_spawnp would try every PATH
    entry in each child)."""
    if "/" in program:
        return program
    path = env.get("PATH", os.defpath)
    key = (program, path)
    found = _which_cache.get(key)
    if found is None:
        found = shutil.which(program, path=path) or program
        _which_cache[key] = found
    return found


_env_cache: tuple[int, dict[str, str]] | None = None


def _base_env() -> dict[str, str]:
    """A snapshot of os.environ, rebuilt only when a task changed it."""
    global _env_cache
    marker = len(os.environ) ^ hash(frozenset(W._env_set.items()))
    if _env_cache is None or _env_cache[0] != marker:
        _env_cache = (marker, dict(os.environ))
    return _env_cache[1]


_forwarded = False


def _forward_stop(signum: int, frame: Any) -> None:
    """Stop request during a command: SIGTERM to the whole process group (the command, the
    shell's children, and this worker, whose handler then only notes it)."""
    global _forwarded
    W.request_stop()
    if _child is not None and not _forwarded:
        _forwarded = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgrp(), signal.SIGTERM)


@dataclass(eq=False, slots=True)
class Prepared:
    """A command task whose folder and log are ready: what :func:`start_command` needs."""

    spec: TaskSpec
    log: TaskLog
    fd: int  # the log, open for appending
    fresh: bool  # a new log file (given back to the scratch slot if the task writes nothing)
    argv: list[str]
    extra: dict[str, str]  # the task's variables over the base environment
    error: str | None = None  # why it cannot start (written to its log)


def prepare_command(spec: TaskSpec, log: TaskLog, defer_log: bool = False) -> Prepared:
    """A clean task folder and its open log (raises OSError when the folder cannot be
    made); ``defer_log``: see :class:`~shoal.worker.tasklog.TaskLog`."""
    new = prepare_task(spec)
    if not new and os.path.isdir(f"{spec.out}/{resultfile.CHECKPOINTS}"):  # another fp's?
        Checkpoints(spec.out, spec.fingerprint)._check()
    header = (f"=== {spec.label} attempt {spec.attempt} on {HOST} at {time.ctime()} ===\n"
              f"$ {spec.command}\n")
    fd, fresh = log.open(spec.out, header, new, defer_log)
    p = Prepared(spec, log, fd, fresh, spec.argv or ["/bin/sh", "-c", spec.command or ""],
                 spec.env())
    if spec.stage:
        try:
            p.extra.update(staging.stage_env(spec.stage, spec.stage_dir))
        except ShoalError as exc:
            p.error = str(exc)
        except OSError as exc:  # (the log is open: the task ends as one that cannot start)
            p.error = f"cannot stage {', '.join(spec.stage)}: {exc}"
    return p


def start_command(p: Prepared, env: dict[str, str], new_group: bool = False) -> int | None:
    """Start a prepared command; its pid, or None when it could not start (said in its
    log: the task then ends as a command that exited with status 127)."""
    if p.error is None:
        try:
            program = _which(p.argv[0], p.extra if "PATH" in p.extra else env)
            return spawn(program, p.argv, env, p.extra, p.fd, new_group)
        except (OSError, ValueError) as exc:  # (ValueError: a NUL byte, bad encoding)
            p.error = f"cannot start {p.argv[0]!r}: {exc}"
    os.write(p.fd, f"shoal: {p.error}\n".encode())
    return None


def give_back(p: Prepared) -> None:
    """A prepared command that will not start now: close its log (the task stays as not
    run: its folder holds no result)."""
    p.log.close(p.fd, p.spec.out, p.fresh)


def spawn_command(
    spec: TaskSpec, log: TaskLog, env: dict[str, str], new_group: bool = False
) -> tuple[int | None, int, bool, float]:
    """Prepare the task folder and log and start the command; returns (pid or None when it
    could not start, log fd, fresh log, start time). The caller waits and calls
    :func:`end_command`."""
    p = prepare_command(spec, log)
    started = time.time()
    return start_command(p, env, new_group), p.fd, p.fresh, started


def end_command(
    spec: TaskSpec, log: TaskLog, fd: int, fresh: bool, code: int, started: float,
    lingering: bool = False, stopped: bool = False, ended: float | None = None,
) -> Outcome:
    """Close the command's log (``lingering``: something it started may still write to it)
    and write its result or error file (``ended``: when it exited; default now)."""
    log.close(fd, spec.out, fresh, lingering)
    return finish_command(spec, code, started, stopped, ended)


def run_command(spec: TaskSpec, env: dict[str, str] | None = None) -> Outcome:
    """Run a command task in a child process of this one (a worker, a Slurm element) and
    record its end. A stop request (SIGTERM/SIGUSR2 to this process) reaches the command's
    whole process group as SIGTERM."""
    global _child, _forwarded
    _forwarded = False
    _install_forwarding()
    log = task_log(spec)
    try:
        pid, fd, fresh, started = spawn_command(
            spec, log, env if env is not None else _base_env())
    except OSError as exc:
        return outcome(spec, TaskStatus.FAILED,
                       error=f"cannot prepare task folder {spec.out}: {exc}")
    code = 127
    if pid is not None:
        _child = pid
        try:
            if W.stop_requested():
                _forward_stop(signal.SIGTERM, None)
            wait_exited(pid)  # (not reaped: a stop signal meanwhile reaches no stranger)
            _child = None
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            _child = None
    return end_command(spec, log, fd, fresh, code, started, stopped=W.stop_requested())


_forwarding = False


def _install_forwarding() -> None:
    """Once per process: stop signals also reach a running command's process group (the
    handler only notes the request while no command runs)."""
    global _forwarding
    if not _forwarding:
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(sig, _forward_stop)
        _forwarding = True


def finish_command(
    spec: TaskSpec, returncode: int, started: float, stopped: bool = False,
    ended: float | None = None,
) -> Outcome:
    """Record the end of a command task run by a backend (``ended``: when the command
    exited, default now). A command that failed after a stop request (preemption, a
    segment's end) is *interrupted*: it goes out again, using no retry."""
    if ended is None:
        ended = time.time()
    if returncode < 0:  # killed: what it started elsewhere must go too
        cleanup(spec)
    # what the command may have left: checkpoints, metrics (the folder was emptied before
    # it ran, so no old error file is left; two lookups cost less than listing the folder)
    out = spec.out
    ckpt = os.path.isdir(f"{out}/{resultfile.CHECKPOINTS}")
    if returncode != 0 and ckpt:
        Checkpoints(out, spec.fingerprint).claim()  # kept for the next attempt
    if returncode == 0:
        try:
            metrics = (resultfile.read_metrics(f"{out}/{METRICS}")
                       if os.access(f"{out}/{METRICS}", os.F_OK) else None) or {}
            if spec.metrics is not None:
                metrics.update(cmetrics.read(spec))
        except (ValueError, OSError) as exc:  # (it exited 0, but its metrics are unusable)
            return write_failure(spec, TaskStatus.FAILED, f"the command exited 0, but {exc}",
                                 started, ended)
        lost = missing_output(spec)
        if lost:
            return write_failure(spec, TaskStatus.FAILED, f"the command exited 0, but {lost}",
                                 started, ended)
        try:
            names = (resultfile.CHECKPOINTS,) if ckpt else ()
            return write_success(spec, metrics, started, names, ended)
        except Exception as exc:
            return write_failure(spec, TaskStatus.FAILED, f"cannot write result: {exc}", started,
                                 ended)
    if stopped:
        return write_failure(spec, TaskStatus.INTERRUPTED,
                             f"stopped on request: {_ended(returncode)}", started, ended)
    why = _ended(returncode)
    if spec.setup and returncode == SETUP_FAILED:
        why += " (its setup= lines failed before the command ran: its log says how)"
    return write_failure(spec, TaskStatus.FAILED, why, started, ended)


def cleanup(spec: TaskSpec) -> None:
    """After a command was killed: run its cleanup command (``podman rm --force NAME``: a
    container outlives its killed runtime), briefly, quietly."""
    if not spec.cleanup:
        return
    import subprocess

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(spec.cleanup, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=False)


def _ended(returncode: int) -> str:
    """How a command ended, in words (a negative code: the signal that killed it)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"command killed by {name}"
    if 128 < returncode < 128 + 65:  # (a shell reports its command's death by signal N so)
        try:
            name = signal.Signals(returncode - 128).name
            return (f"command exited with status {returncode} (as a shell does when what it "
                    f"ran was killed by {name})")
        except ValueError:
            pass
    return f"command exited with status {returncode}"
