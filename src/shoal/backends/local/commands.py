"""Command steps on the local backend: bundles run by threads of the controller process.

A command needs no Python worker, and a round trip through one costs more than a short
command. Each slot's bundle of commands runs in a thread that starts them one after the
other (:mod:`shoal.worker.spawn`: ``os.posix_spawn``, each command in its own process group) and
posts their outcomes. A thread starts the next command as soon as one exits and writes the
finished one's log and result file while the next runs. The controller wakes up on a pipe,
written once until it drains the outcomes; it never waits on a runner's lock.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shoal.backends.local import pgroups
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import command as C
from shoal.worker import spawn
from shoal.worker import task as W
from shoal.worker.tasklog import TaskLog
from shoal.worker.taskspec import TaskSpec

if TYPE_CHECKING:
    from shoal.backends.local.supervisor import Supervisor

WAKE_EVERY = 32  # successes that wake the controller up (see CommandRunner._post)
PLACE_LOG_AFTER = 0.5  # s a command runs before its log is put in its folder (if silent)


@dataclass(eq=False)
class _Bundle:
    todo: list[TaskSpec]  # in order; todo[:next] were taken
    logs: list[TaskLog]  # scratch logs not in use (a running and a ready task hold one each)
    next: int = 0
    pending: int = 0  # tasks whose outcome is not posted yet
    current: TaskSpec | None = None  # the task whose command runs now
    unplaced: TaskLog | None = None  # its log, not in its folder yet (see place_logs)
    pid: int | None = None
    started: float = 0.0
    kill_reason: str | None = None
    kill_status: str = TaskStatus.FAILED
    released: bool = False  # its thread and logs were given back (see _release)
    lock: threading.Lock = field(default_factory=threading.Lock)  # current, pid, kill_reason


@dataclass(slots=True)
class _Ended:
    """A command that exited (or was killed), before its files are written."""

    spec: TaskSpec
    log: TaskLog
    fd: int
    fresh: bool
    code: int
    started: float
    ended: float  # when it exited (waited for)
    kill_reason: str | None
    kill_status: str
    lingering: bool = False  # its process group outlived it (may still write to its log)


def unstarted(spec: TaskSpec) -> Outcome:
    """The outcome of a queued task that never started (stop, or the task before it died)."""
    return W.outcome(spec, TaskStatus.UNSTARTED)


@dataclass(eq=False)
class CommandRunner:
    """Runs bundles of command tasks in threads; outcomes come out of :meth:`drain`."""

    cwd: str
    env: dict[str, str]
    bundles: list[_Bundle] = field(default_factory=list)
    stopping: bool = False
    stop_deadline: float = float("inf")  # (when stopping) what still runs then is killed
    lingering: list[int] = field(default_factory=list)  # process groups that outlived their
    # command during a stop (a shell that exited on SIGTERM, what it ran ignoring it)
    _outcomes: queue.SimpleQueue[Outcome] = field(default_factory=queue.SimpleQueue)
    _spare_logs: list[TaskLog] = field(default_factory=list)
    _nlogs: Iterator[int] = field(default_factory=itertools.count)  # (next() is atomic)
    _rfd: int = -1
    _woken: bool = False
    _unseen: int = 0  # outcomes posted since the last drain
    _wfd: int = -1
    _threads: list[threading.Thread] = field(default_factory=list)
    _handoff: queue.SimpleQueue[_Bundle | None] = field(default_factory=queue.SimpleQueue)
    _idle: int = 0  # threads waiting on _handoff for their next bundle
    _idle_lock: threading.Lock = field(default_factory=threading.Lock)
    supervisor: Supervisor | None = None  # told each command's process group

    def __post_init__(self) -> None:
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)

    def fileno(self) -> int:
        """Readable when the controller should take the outcomes (see :meth:`_post`)."""
        return self._rfd

    @property
    def running(self) -> int:
        return sum(b.pending for b in self.bundles)

    def start(self, specs: list[TaskSpec]) -> None:
        if os.getcwd() != self.cwd:  # posix_spawn has no cwd: commands run in the exp folder
            os.chdir(self.cwd)
        logs = [self._spare_logs.pop() if self._spare_logs else self._new_log(specs[0])
                for _ in range(2)]
        b = _Bundle(list(specs), logs, pending=len(specs))
        self.bundles.append(b)
        with self._idle_lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
        if reuse:  # (a thread that ran a bundle waits: no thread start, warm caches)
            self._handoff.put(b)
            return
        t = threading.Thread(target=self._serve, args=(b,), daemon=True,
                             name="shoal-commands")
        self._threads.append(t)
        t.start()

    def _serve(self, b: _Bundle | None) -> None:
        """A runner thread: run bundles until told to end (None)."""
        while b is not None:
            self._run(b)
            self._release(b)
            b = self._handoff.get()

    def _new_log(self, spec: TaskSpec) -> TaskLog:
        return TaskLog(f"{spec.root}/.shoal/scratch", f"-cmd{next(self._nlogs)}")

    def _release(self, b: _Bundle) -> None:
        """The bundle's thread and scratch logs are free for the next bundle (once; before
        its last outcome is posted, so that the controller's next start finds them)."""
        if not b.released:
            b.released = True
            self._spare_logs.extend(b.logs)
            b.logs = []
            with self._idle_lock:
                self._idle += 1

    def _run(self, b: _Bundle) -> None:
        """Run the bundle's commands one after the other, keeping the gap between two of them
        short: the next task's folder and log are made ready while a command runs, and the
        one that ended is recorded (log closed, result file written) after the next began."""
        ended: _Ended | None = None  # exited, waits to be recorded
        nxt: C.Prepared | None = None  # ready to start
        spec: TaskSpec | None = None  # running
        try:
            nxt = self._prepare(b)
            while True:
                spec = None
                if nxt is not None and not (self.stopping or b.kill_reason):
                    p, nxt = nxt, None
                    spec = p.spec
                    started = time.time()
                    sup = self.supervisor
                    if sup is not None and spec.cleanup:
                        sup.add_cleanup(spec.token, spec.cleanup)
                    pid = C.start_command(p, self.env, True)
                    if sup is not None and pid is not None:
                        sup.add_group(pid)
                    with b.lock:  # a kill or stop that came during the spawn: now
                        b.unplaced = p.log
                        b.started, b.pid, b.current = started, pid, spec  # (glimpsed lock-free)
                        late = self.stopping or b.kill_reason
                    if late and pid is not None:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pid, signal.SIGKILL if b.kill_reason else signal.SIGTERM)
                if ended is not None:
                    done, ended = ended, None
                    outcome = self._record(done)
                    if self.supervisor is not None and done.spec.cleanup:
                        self.supervisor.remove_cleanup(done.spec.token)
                    b.logs.append(done.log)  # (before the post: it may be the bundle's last)
                    self._post(b, outcome)
                if spec is None:
                    break
                nxt = self._prepare(b)
                if pid is not None:  # (exited, not reaped: kill() cannot hit a reused pid)
                    spawn.wait_exited(pid)
                with b.lock:
                    b.pid = b.current = b.unplaced = None
                    ended = _Ended(spec, p.log, p.fd, p.fresh, 127, started, time.time(),
                                   b.kill_reason, b.kill_status)
                if pid is not None:
                    _, status = os.waitpid(pid, 0)
                    ended.code = os.waitstatus_to_exitcode(status)
                    ended.lingering = pgroups.alive(pid)  # (something it started still runs)
                    if self.supervisor is not None and not ended.lingering:
                        self.supervisor.remove_group(pid)
                    if ended.lingering and self.stopping:  # (killed at the stop's deadline)
                        self.lingering.append(pid)
                spec = None
        except BaseException as exc:  # never lose a task: those at hand failed, the rest wait
            with b.lock:
                pid, b.pid, b.current, b.unplaced = b.pid, None, None, None
            if pid is not None:  # (a command still running: end it)
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            with contextlib.suppress(Exception):  # (their output into their folders)
                if ended is not None:
                    ended.log.close(ended.fd, ended.spec.out, ended.fresh)
                if spec is not None:
                    p.log.close(p.fd, spec.out, p.fresh)
            for lost in (ended.spec if ended else None, spec):
                if lost is not None:
                    self._post(b, W.outcome(lost, TaskStatus.FAILED,
                                            error=f"shoal: command runner: {exc}"))
        finally:
            rest = []
            if nxt is not None:  # made ready, never started
                with contextlib.suppress(OSError):
                    C.give_back(nxt)
                b.logs.append(nxt.log)
                rest.append(nxt.spec)
            with b.lock:
                rest, b.next = rest + b.todo[b.next:], len(b.todo)
            for left in rest:
                self._post(b, unstarted(left))

    def _prepare(self, b: _Bundle) -> C.Prepared | None:
        """The bundle's next task with its folder and log made ready (a task whose folder
        cannot be made fails here, and the next one is taken)."""
        while b.next < len(b.todo) and not (self.stopping or b.kill_reason):
            spec = b.todo[b.next]
            b.next += 1
            log = b.logs.pop() if b.logs else self._new_log(spec)
            try:
                return C.prepare_command(spec, log, defer_log=True)
            except Exception as exc:  # (OSError: the folder cannot be made)
                b.logs.append(log)
                self._post(b, W.outcome(spec, TaskStatus.FAILED,
                                        error=f"cannot prepare task folder {spec.out}: {exc}"))
        return None

    @staticmethod
    def _record(e: _Ended) -> Outcome:
        """Close the ended task's log and write its result or error file."""
        try:
            if e.kill_reason:
                os.write(e.fd, f"shoal: {e.kill_reason}\n".encode())  # (why it ended)
                e.log.close(e.fd, e.spec.out, e.fresh, e.lingering)
                C.cleanup(e.spec)
                return W.write_failure(e.spec, e.kill_status, e.kill_reason, e.started,
                                       e.ended)
            return C.end_command(e.spec, e.log, e.fd, e.fresh, e.code, e.started, e.lingering,
                                 ended=e.ended)
        except Exception as exc:  # (its folder went away…): this task fails, the bundle goes on
            return W.outcome(e.spec, TaskStatus.FAILED,
                             error=f"cannot record the end of the command: {exc}")

    def _post(self, b: _Bundle, outcome: Outcome) -> None:
        """Hand an outcome to the controller. It is woken up when this frees a slot (the
        bundle's last), for anything but a success, and every ``WAKE_EVERY`` outcomes; other
        successes wait for the next wake-up (or its 0.2 s poll), so that a bundle of short
        tasks costs it few rounds of its loop."""
        b.pending -= 1
        if b.pending == 0:
            self._release(b)  # (its thread's last step: the controller may hand it the next)
        self._outcomes.put(outcome)
        self._unseen += 1
        if not self._woken and (b.pending == 0 or outcome.status != TaskStatus.DONE
                                or self._unseen >= WAKE_EVERY):
            self._woken = True  # one wake-up until the controller drains
            with contextlib.suppress(OSError):
                os.write(self._wfd, b"x")

    def drain(self) -> list[Outcome]:
        """Outcomes posted since the last call."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self._rfd, 4096)  # (a byte per wake-up: one read empties it)
        self._woken = False  # (after reading, before taking: a later post wakes again)
        self._unseen = 0
        out = []
        while True:
            try:
                out.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        self.bundles = [b for b in self.bundles if b.pending]
        return out

    def place_logs(self, now: float) -> None:
        """Put the logs of commands running for ``PLACE_LOG_AFTER`` s in their folders (a
        short one's log goes there when it ends, and only if it wrote anything)."""
        for b in list(self.bundles):
            if b.unplaced is not None and now - b.started > PLACE_LOG_AFTER:  # (a glimpse)
                with b.lock:
                    if b.unplaced is not None and now - b.started > PLACE_LOG_AFTER:
                        b.unplaced.place()
                        b.unplaced = None  # (placed, or left for the end)

    def running_specs(self) -> list[tuple[TaskSpec, float]]:
        out = []
        for b in list(self.bundles):
            spec, pid, started = b.current, b.pid, b.started  # (a glimpse is enough here)
            if spec is not None and pid is not None:
                out.append((spec, started))
        return out

    def kill(self, spec: TaskSpec, reason: str, status: str = TaskStatus.FAILED) -> bool:
        """Kill the command running ``spec``; its outcome (and the bundle's rest, as not
        started) arrive through :meth:`drain`. False when ``spec`` is not running here."""
        for b in list(self.bundles):
            with b.lock:
                if b.current is not spec:
                    continue
                if b.kill_reason is None and b.pid is not None:
                    b.kill_reason, b.kill_status = reason, status
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(b.pid, signal.SIGKILL)
                return True
        return False

    def signal_stop(self, deadline: float = float("inf")) -> None:
        """SIGTERM to every running command's process group; start nothing more; what is
        left of those groups at ``deadline`` is killed by :meth:`shutdown` (again: a sooner
        deadline)."""
        self.stopping = True
        self.stop_deadline = min(self.stop_deadline, deadline)
        for b in list(self.bundles):
            with b.lock:
                if b.pid is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(b.pid, signal.SIGTERM)

    def shutdown(self) -> None:
        """Kill what runs (recorded interrupted, "shut down"), start nothing more — also a
        command being spawned right now (its thread kills it once it has its pid)."""
        self.stopping = True
        for b in list(self.bundles):
            with b.lock:
                if b.kill_reason is None:
                    b.kill_reason, b.kill_status = "shut down", TaskStatus.INTERRUPTED
                if b.pid is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(b.pid, signal.SIGKILL)
        for _ in self._threads:  # (one each: a thread ends on the first it takes)
            self._handoff.put(None)
        deadline = time.monotonic() + 10
        alive = False
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
            alive = alive or t.is_alive()
        if not alive:  # a thread still posting keeps its pipe
            for fd in (self._rfd, self._wfd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        try:  # (what outlived its command during a stop: until the deadline, then SIGKILL)
            pgroups.end(self.lingering, self.stop_deadline)
        finally:
            self.lingering = []
