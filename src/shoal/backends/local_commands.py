"""Command steps on the local backend: bundles run by threads of the controller process.

A command needs no Python worker, and a round trip through one costs more than a short
command. Each slot's bundle of commands runs in a thread that spawns them one after the
other (``posix_spawn``, each in its own process group) and posts their outcomes; the spawn,
wait and file writes release the GIL, so slots overlap. The controller wakes up on a pipe.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from shoal import command as C
from shoal import worker as W
from shoal.taskspec import TaskSpec


@dataclass(eq=False)
class _Bundle:
    queue: list[TaskSpec]
    log: W.TaskLog
    pid: int | None = None
    started: float = 0.0
    kill_reason: str | None = None
    kill_status: str = "failed"
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # head, pid, kill_reason


def unstarted(spec: TaskSpec) -> dict[str, Any]:
    """The outcome of a queued task that never started (stop, or the task before it died)."""
    return W.outcome(spec, "unstarted")


@dataclass(eq=False)
class CommandRunner:
    """Runs bundles of command tasks in threads; outcomes come out of :meth:`drain`."""

    cwd: str
    env: dict[str, str]
    bundles: list[_Bundle] = field(default_factory=list)
    stopping: bool = False
    _outcomes: queue.SimpleQueue[dict[str, Any]] = field(default_factory=queue.SimpleQueue)
    _spare_logs: list[W.TaskLog] = field(default_factory=list)
    _nlogs: int = 0
    _rfd: int = -1
    _wfd: int = -1

    def __post_init__(self) -> None:
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)

    def fileno(self) -> int:
        """Readable when outcomes are waiting (for ``multiprocessing.connection.wait``)."""
        return self._rfd

    @property
    def running(self) -> int:
        return sum(len(b.queue) for b in self.bundles)

    def start(self, specs: list[TaskSpec]) -> None:
        if os.getcwd() != self.cwd:  # posix_spawn has no cwd: commands run in the exp folder
            os.chdir(self.cwd)
        if self._spare_logs:
            log = self._spare_logs.pop()
        else:
            self._nlogs += 1
            log = W.TaskLog(f"{specs[0].root}/.shoal/scratch", f"-cmd{self._nlogs}")
        b = _Bundle(list(specs), log)
        b.thread = threading.Thread(target=self._run, args=(b,), daemon=True,
                                    name=f"shoal-cmd-{self._nlogs}")
        self.bundles.append(b)
        b.thread.start()

    def _run(self, b: _Bundle) -> None:
        try:
            while True:
                with b.lock:  # a kill or stop cannot slip between this check and the spawn
                    if not b.queue or self.stopping or b.kill_reason:
                        break
                    spec = b.queue[0]
                    pid, fd, fresh, started = C.spawn_command(spec, b.log, self.env, True)
                    b.pid, b.started = pid, started
                code = 127
                if pid is not None:
                    _, status = os.waitpid(pid, 0)
                    code = os.waitstatus_to_exitcode(status)
                with b.lock:
                    b.pid = None
                    reason, kstatus = b.kill_reason, b.kill_status
                if reason:
                    b.log.close(fd, spec.out, fresh)
                    out = W.write_failure(spec, kstatus, reason, started)
                else:
                    out = C.end_command(spec, b.log, fd, fresh, code, started)
                with b.lock:
                    b.queue.pop(0)
                self._post(out)
                if reason:
                    break
        except BaseException as exc:  # never lose a task: the one at hand failed, the rest wait
            with b.lock:
                if b.queue:
                    self._post(W.outcome(b.queue.pop(0), "failed",
                                         error=f"shoal: command runner: {exc}"))
        finally:
            with b.lock:
                rest, b.queue = b.queue, []
            for spec in rest:
                self._post(unstarted(spec))
            self._spare_logs.append(b.log)

    def _post(self, outcome: dict[str, Any]) -> None:
        self._outcomes.put(outcome)
        with contextlib.suppress(OSError):
            os.write(self._wfd, b"x")

    def drain(self) -> list[dict[str, Any]]:
        """Outcomes posted since the last call."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._rfd, 4096):
                pass
        out = []
        while True:
            try:
                out.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        self.bundles = [b for b in self.bundles if b.queue]
        return out

    def running_specs(self) -> list[tuple[TaskSpec, float]]:
        out = []
        for b in list(self.bundles):
            with b.lock:
                if b.queue and b.pid is not None:
                    out.append((b.queue[0], b.started))
        return out

    def kill(self, spec: TaskSpec, reason: str, status: str = "failed") -> bool:
        """Kill the command running ``spec``; its outcome (and the bundle's rest, as not
        started) arrive through :meth:`drain`. False when ``spec`` is not running here."""
        for b in list(self.bundles):
            with b.lock:
                if not (b.queue and b.queue[0] is spec):
                    continue
                if b.kill_reason is None and b.pid is not None:
                    b.kill_reason, b.kill_status = reason, status
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(b.pid, signal.SIGKILL)
                return True
        return False

    def signal_stop(self) -> None:
        """SIGTERM to every running command's process group; start nothing more."""
        self.stopping = True
        for b in list(self.bundles):
            with b.lock:
                if b.pid is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(b.pid, signal.SIGTERM)

    def shutdown(self) -> None:
        self.stopping = True
        for b in list(self.bundles):
            with b.lock:
                head = b.queue[0] if b.queue else None
            if head is not None:
                self.kill(head, "shut down", "interrupted")
        alive = False
        for b in list(self.bundles):
            if b.thread is not None:
                b.thread.join(timeout=10)
                alive = alive or b.thread.is_alive()
        if not alive:  # a thread still posting keeps its pipe
            for fd in (self._rfd, self._wfd):
                with contextlib.suppress(OSError):
                    os.close(fd)
