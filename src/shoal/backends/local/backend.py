"""The local backend: a pool of persistent worker processes on this machine.

Workers import the experiment once and run many tasks (a fresh interpreter plus ``import
torch`` per task would dominate small trainings). A worker is pinned to a shape (cpus, GPU
devices) because thread pools and CUDA read their environment once per process. A worker that
dies fails only its task and is replaced on demand; a timed-out task's worker is killed with
everything it started (its process group). Command steps need no worker: controller threads
spawn them (``local_commands.py``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from shoal.backends.base import Backend
from shoal.backends.local.commands import CommandRunner, unstarted
from shoal.backends.local.supervisor import Supervisor
from shoal.errors import ShoalError
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import task as W
from shoal.worker import wrap
from shoal.worker.taskspec import TaskSpec

if TYPE_CHECKING:
    import subprocess
    from multiprocessing.connection import Connection

Shape = tuple[int, tuple[str, ...], tuple[str, ...]]  # cpus, GPU devices, setup= lines


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    inbox: Connection  # controller -> worker
    outbox: Connection  # worker -> controller
    shape: Shape
    queue: list[TaskSpec] = field(default_factory=list)  # sent, not yet reported, in order
    started: float = 0.0  # when the head of the queue started
    tasks: int = 0
    ready: bool = False  # it imported the experiment

    @property
    def spec(self) -> TaskSpec | None:
        """The task running now (the head of the queue)."""
        return self.queue[0] if self.queue else None


@dataclass
class LocalBackend(Backend):
    """Runs task specs on this machine."""

    target: str
    config: dict[str, Any]
    cwd: str
    max_workers: int
    workers: list[_Worker] = field(default_factory=list)
    _env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _commands: CommandRunner | None = None
    _supervisor: Supervisor | None = None
    _poller: Any = None
    _polled: tuple[int, ...] = ()

    @property
    def commands(self) -> CommandRunner:
        if self._commands is None:
            self._commands = CommandRunner(self.cwd, self._env)
        return self._commands

    def _watch(self, spec: TaskSpec) -> Supervisor:
        """The run's supervisor (started with the first task): it ends what the tasks
        started if this controller dies."""
        if self._supervisor is None:
            self._supervisor = Supervisor(spec.run_id or "unknown")
            self.commands.supervisor = self._supervisor
        return self._supervisor

    # ------------------------------------------------------------------ starting
    def start(self, specs: list[TaskSpec]) -> None:
        """Run ``specs`` (one slot's worth: same shape) one after the other in one worker.

        Several specs form a *bundle* of short tasks: one message to the worker, which runs
        them back to back and reports each as it ends.
        """
        spec = specs[0]
        self._watch(spec)
        if spec.command is not None and spec.procs == 1:  # (a command's ranks: in a worker)
            self.commands.start(specs)
            return
        shape: Shape = (spec.cpus, tuple(spec.devices or ()), tuple(spec.setup))
        for dead in [w for w in self.workers if not w.queue and w.proc.poll() is not None]:
            self._close(dead)  # an idle worker that died (OOM…) is not reused
        w = next((w for w in self.workers if not w.queue and w.shape == shape), None)
        if w is None:
            if len(self.workers) >= self.max_workers:
                idle = next((w for w in self.workers if not w.queue), None)
                if idle is not None:
                    self._retire(idle)
            w = self._spawn(shape, spec)
        w.queue = list(specs)
        w.started = time.time()
        w.tasks += len(specs)
        with contextlib.suppress(OSError):  # a dead worker's EOF is picked up by poll()
            w.inbox.send(("run", specs))

    def _spawn(self, shape: Shape, spec: TaskSpec) -> _Worker:
        import subprocess  # (not needed for commands)
        from multiprocessing.connection import Connection

        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        # (a worker's own environment: the shape's, not one task's env=, which each task
        # sets and undoes in the worker)
        env = {**self._env, **replace(spec, user_env={}).env(),
               "SHOAL_PARENT_PID": str(os.getpid())}
        for k in ("SHOAL_STEP", "SHOAL_TASK", "SHOAL_OUT", "SHOAL_ATTEMPT"):
            env.pop(k, None)
        argv = [sys.executable, "-m", "shoal.backends.local.worker", str(r_in), str(w_out)]
        if spec.setup:  # the step's setup= lines run first, in the shell that execs it
            argv = [wrap.shell(), "-c", wrap.with_setup(spec.setup, "", argv)]
        proc = subprocess.Popen(
            argv, pass_fds=(r_in, w_out), env=env, cwd=self.cwd, start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        os.close(r_in)
        os.close(w_out)
        self._watch(spec).add_group(proc.pid)  # (its own session: pgid = pid)
        w = _Worker(proc, Connection(w_in, readable=False), Connection(r_out, writable=False),
                    shape)
        with contextlib.suppress(OSError):  # (one that died at once: poll() reports it)
            w.inbox.send(("init", self.target, self.config, self.cwd))
        self.workers.append(w)
        return w

    def _retire(self, w: _Worker) -> None:
        """End an idle worker politely (its atexit handlers run), then whatever its tasks
        left running in its process group (as Slurm ends a job's processes with it)."""
        with contextlib.suppress(OSError):
            w.inbox.send(("exit",))
        self._close(w)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(w.proc.pid, signal.SIGKILL)

    def _close(self, w: _Worker, kill: bool = False) -> None:
        if kill:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(w.proc.pid, signal.SIGKILL)
        for c in (w.inbox, w.outbox):
            with contextlib.suppress(OSError):
                c.close()
        import subprocess

        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(timeout=5 if not kill else 10)
        if w in self.workers:
            self.workers.remove(w)
        if self._supervisor is not None:
            self._supervisor.remove_group(w.proc.pid)

    # ------------------------------------------------------------------ progress
    @property
    def running(self) -> int:
        n = sum(len(w.queue) for w in self.workers)
        return n + (self._commands.running if self._commands else 0)

    def poll(self, timeout: float) -> list[Outcome]:
        """Wait up to ``timeout`` s; return the outcomes of tasks that ended."""
        busy = [w for w in self.workers if w.queue]
        fds = [w.outbox.fileno() for w in busy]
        if self._commands is not None:
            fds.append(self._commands.fileno())
        if fds:
            ready = self._wait(fds, timeout)
        else:
            if timeout > 0:
                time.sleep(min(timeout, 0.05))
            ready = set()
        outcomes: list[Outcome] = []
        for w in busy:
            if w.outbox.fileno() in ready:
                outcomes.extend(self._receive(w))
        if self._commands is not None:
            outcomes.extend(self._commands.drain())
            self._commands.place_logs(time.time())
        return outcomes

    def _wait(self, fds: list[int], timeout: float) -> set[int]:
        """The fds readable within ``timeout`` s (one poll object while the set stays)."""
        key = tuple(fds)
        if self._poller is None or self._polled != key:
            self._poller = select.poll()
            for fd in fds:
                self._poller.register(fd, select.POLLIN)
            self._polled = key
        return {fd for fd, _ in self._poller.poll(timeout * 1000)}  # (hang-ups too)

    def _receive(self, w: _Worker) -> list[Outcome]:
        out: list[Outcome] = []
        while w.queue:
            try:
                msg = w.outbox.recv()
            except (EOFError, OSError):
                code = w.proc.wait()
                self._close(w, kill=True)  # and whatever the task started
                why = _exit_text(code)
                head, rest = w.queue[0], w.queue[1:]
                w.queue = []
                if head.setup and not w.ready:  # (it never got going)
                    why += ("; the step's setup= lines ran before it started: check them "
                            f"({'; '.join(head.setup)})")
                out.append(W.write_failure(head, TaskStatus.FAILED, f"worker process died ({why})",
                                           w.started))
                return out + [unstarted(s) for s in rest]
            if msg[0] == "ready":  # the import is done: the task's clock starts now
                w.started = time.time()
                w.ready = True
            if msg[0] == "fatal":
                self._close(w, kill=True)
                raise ShoalError(f"a worker could not import the experiment: {msg[1]}")
            if msg[0] == "done":
                w.queue.pop(0)
                w.started = time.time()
                out.append(msg[1])
            if not w.outbox.poll():  # drain what has arrived, never block
                break
        return out

    # ------------------------------------------------------------------ stopping
    def running_specs(self) -> list[tuple[TaskSpec, float]]:
        """The task each busy worker runs now, with its start time."""
        out = [(w.queue[0], w.started) for w in self.workers if w.queue]
        return out + (self._commands.running_specs() if self._commands else [])

    def kill(
        self, spec: TaskSpec, reason: str, status: str = TaskStatus.FAILED
    ) -> list[Outcome]:
        """Kill the task (and everything it started); record it with ``reason``. Tasks
        queued behind it in the same worker come back as not started."""
        for w in self.workers:
            if w.queue and w.queue[0] is spec:
                rest = w.queue[1:]
                w.queue = []
                self._close(w, kill=True)
                return [W.write_failure(spec, status, reason, w.started, in_log=True),
                        *[unstarted(s) for s in rest]]
        if self._commands is not None:
            self._commands.kill(spec, reason, status)
        return []  # its outcome arrives through poll() (or it already ended)

    def signal_stop(self, deadline: float) -> None:
        """Ask every running task to stop: SIGUSR2 to a function task's worker
        (``ctx.should_stop()`` turns true), SIGTERM to a command's process group (what is
        left of it at ``deadline`` is killed, even once the command itself has exited)."""
        for w in self.workers:
            if w.queue:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, signal.SIGUSR2)
        if self._commands is not None:
            self._commands.signal_stop(deadline)

    def shutdown(self) -> None:
        """End every worker (idle ones politely)."""
        for w in list(self.workers):
            if not w.queue:
                self._retire(w)
            else:
                self._close(w, kill=True)
        if self._commands is not None:
            self._commands.shutdown()
        if self._supervisor is not None:
            self._supervisor.close()
            self._supervisor = None



def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
