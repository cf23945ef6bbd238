"""SlurmBackend: the controller's tasks as job arrays on a Slurm cluster (attached mode).

``start`` collects bundles; ``poll`` submits what was collected — one ``sbatch --array`` per
(step, resource shape), chunked to the cluster's ``MaxArraySize`` — then learns progress from
the tasks' result files (the truth for success) and from one ``squeue`` call for all of the
run's arrays (with back-off). An element that left the queue without a result for one of its
tasks fails that task (lost, timed out, cancelled…), and the controller retries it.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from shoal.backends.base import Backend
from shoal.backends.slurm import commands, manifest, script
from shoal.backends.slurm.profile import SlurmOptions
from shoal.state import resultfile
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import task as W
from shoal.worker.taskspec import TaskSpec


def jobs_file(root: Path) -> Path:
    """Where a run root lists the Slurm arrays its runs submitted (``shoal cancel``)."""
    return root / ".shoal" / "slurm" / "jobs"


def cancel(root: Path) -> tuple[list[str], int]:
    """Cancel the run root's arrays still known to Slurm; returns (their ids, elements)."""
    try:
        ids = {line.split("\t", 1)[0] for line in jobs_file(root).read_text().splitlines()
               if line.strip()}
    except FileNotFoundError:
        return [], 0
    live = commands.squeue(ids)
    active = sorted({job for (job, _), st in live.items()
                     if commands.STATES.get(st) != "ended"})
    commands.scancel(active)
    return active, sum(1 for (job, _) in live if job in active)


#: A job's final state -> what became of a task it left without a result: not started (it
#: goes out again, using no attempt: preempted, requeued, or asked to stop before it began),
#: or failed, and why. A state not listed fails the task with its name.
_LEFT: dict[str, tuple[TaskStatus, str]] = {
    "PREEMPTED": (TaskStatus.UNSTARTED, "was preempted"),
    "REQUEUED": (TaskStatus.UNSTARTED, "was requeued"),
    "COMPLETED": (TaskStatus.UNSTARTED, "completed"),
    "TIMEOUT": (TaskStatus.FAILED, "hit its time limit (TIMEOUT)"),
    "OUT_OF_MEMORY": (TaskStatus.FAILED, "ran out of memory (OUT_OF_MEMORY)"),
    "CANCELLED": (TaskStatus.FAILED, "was cancelled (CANCELLED)"),
    "NODE_FAIL": (TaskStatus.FAILED, "lost its node (NODE_FAIL)"),
    "FAILED": (TaskStatus.FAILED, "failed (FAILED)"),
    "BOOT_FAIL": (TaskStatus.FAILED, "could not start (BOOT_FAIL)"),
    "DEADLINE": (TaskStatus.FAILED, "missed its deadline (DEADLINE)"),
}


@dataclass(eq=False)
class _Element:
    job: str  # array job id
    index: int  # index within that array
    specs: list[TaskSpec]
    reported: set[str] = field(default_factory=set)  # task keys already reported


@dataclass(eq=False)
class SlurmBackend(Backend):
    """Runs task specs as Slurm job arrays."""

    root: Path
    experiment: str
    options: SlurmOptions = field(default_factory=SlurmOptions)
    python: str = sys.executable
    assigns_devices: ClassVar[bool] = False  # Slurm sets CUDA_VISIBLE_DEVICES itself
    stages_on_node: ClassVar[bool] = True  # stage= archives unpack in the node's scratch
    defers_start: ClassVar[bool] = True  # start() only collects; poll() submits
    detaches: ClassVar[bool] = True  # arrays with afterany dependencies: submit_detached
    name: ClassVar[str] = "slurm"
    pending: list[list[TaskSpec]] = field(default_factory=list)
    elements: dict[tuple[str, int], _Element] = field(default_factory=dict)
    submissions: int = 0  # sbatch calls
    _max_array: int | None = None
    _last_squeue: float = 0.0
    _interval: float = 0.0
    _submissions: int = 0
    stopped: bool = False
    oom: dict[tuple[str, str], int] = field(default_factory=dict)  # task -> OOM endings
    # tasks of an earlier --detach still queued or running: (step, key) -> (job, index,
    # token); started again, they are followed there instead of submitted twice
    adopt: dict[tuple[str, str], tuple[str, int, str, str | None]] = field(
        default_factory=dict)
    adopted: set[tuple[str, str]] = field(default_factory=set)
    _detached: dict[str, list[str]] = field(default_factory=dict)  # step -> its arrays

    # ---------------------------------------------------------------- submitting
    def bundle_size(self, step: str, time_s: float | None, queued: int) -> int:
        """Tasks per array element: ``tasks_per_job``, or as many as fit in
        ``bundle_minutes`` by the step's ``time=`` (one when the step gives no time)."""
        o = self.options.for_step(step)
        limit = self.max_time(step)
        if limit and time_s:  # a bundle must fit in one job
            fit = max(1, int((limit - 60) // (time_s * 1.1)))
        else:
            fit = queued
        if o.tasks_per_job:
            return max(1, min(o.tasks_per_job, fit))
        if not time_s:
            return 1
        return max(1, min(queued, fit, int(o.bundle_minutes * 60 // time_s)))

    def max_time(self, step: str) -> float | None:
        """The longest job of a step: the profile's ``max_time``, else its partition's."""
        o = self.options.for_step(step)
        return o.max_time or commands.partition_max_time(o.partition)

    def segments(self, step: str, time_s: float | None) -> int:
        """Jobs one task of the step takes: a task longer than ``max_time`` runs as
        chained segments, each stopped (USR2) ``signal_grace`` before its end."""
        limit = self.max_time(step)
        if not (limit and time_s) or time_s <= limit:
            return 1
        grace = min(self.options.for_step(step).signal_grace, limit / 2)
        return int(-(-time_s // (limit - grace)))

    def start(self, specs: list[TaskSpec]) -> None:
        fresh = []
        for spec in specs:
            where = self.adopt.pop((spec.step, spec.key), None)
            if where is None or where[3] != spec.fingerprint:  # (stale ones: cancelled)
                fresh.append(spec)
                continue
            job, index, token, _fp = where
            spec.token = token  # its result file will carry the detached submission's token
            self.adopted.add((spec.step, spec.key))
            el = self.elements.get((job, index))
            if el is None:
                el = self.elements[(job, index)] = _Element(job, index, [])
            el.specs.append(spec)
        if fresh:
            self.pending.append(fresh)

    def submit_detached(self, step: str, bundles: list[list[TaskSpec]],
                        after: list[str]) -> list[str]:
        """One step's arrays, each element waiting (``afterany``) for the arrays submitted
        here before for the steps ``after``; listed in the manifest, not followed."""
        jobs = [job for name in after for job in self._detached.get(name, [])]
        self.pending = list(bundles)
        ids = self._detached[step] = self._submit(
            dependency="afterany:" + ":".join(jobs) if jobs else None)
        self.elements.clear()  # nothing follows them from here
        return ids

    def _submit(self, dependency: str | None = None) -> list[str]:
        """Submit the pending bundles (one array per step and shape); their job ids."""
        ids: list[str] = []
        groups: dict[tuple[Any, ...], list[list[TaskSpec]]] = {}
        for bundle in self.pending:
            s = bundle[0]
            factor = self.options.mem_retry_factor
            if factor and s.mem_mb:  # a task that ran out of memory gets more this time
                bumps = max(self.oom.get((t.step, t.key), 0) for t in bundle)
                if bumps:
                    for t in bundle:
                        t.mem_mb = int(s.mem_mb * factor ** bumps)
            # a multi-process task: one Slurm task per rank (srun starts them), cpus each;
            # a command that starts its own ranks: one task with all their cpus
            ntasks = s.starts if s.starts > 1 else 1
            cpus = s.cpus if ntasks > 1 else s.cpus * s.procs
            shape = (s.step, cpus, ntasks, s.nodes, s.gpus, s.mem_mb, s.time_s, len(bundle))
            groups.setdefault(shape, []).append(bundle)
        self.pending = []
        if self._max_array is None:
            self._max_array = commands.max_array_size()
        for (step, cpus, ntasks, nodes, gpus, mem_mb, _t, _n), bundles in groups.items():
            self._submissions += 1
            sub = self.root / ".shoal" / "slurm" / f"{int(time.time())}-{os.getpid()}-" \
                f"{self._submissions}"
            sub.mkdir(parents=True, exist_ok=True)
            logs = self.root / "logs" / step
            logs.mkdir(parents=True, exist_ok=True)  # a missing output folder fails silently
            with open(sub / "bundles.pkl", "wb") as fh:
                pickle.dump([[s.to_dict() for s in b] for b in bundles], fh)
            per_task = max((s.time_s or 0.0) for b in bundles for s in b) or None
            o = self.options.for_step(step)
            # a bundle runs its tasks one after the other; a pack runs them in one call
            size = 1 if bundles[0][0].packed else max(len(b) for b in bundles)
            job_time = per_task * size * 1.1 + 60 if per_task else None
            limit = self.max_time(step)
            if limit and (job_time is None or job_time > limit):
                job_time = limit  # a longer task goes on in the next segment
            grace = int(min(o.signal_grace, job_time / 2)) if job_time else int(o.signal_grace)
            for offset, n in script.chunks(len(bundles), self._max_array):
                text = script.render(
                    job_name=f"shoal-{self.experiment}-{step}", size=n,
                    output=str(logs / "%A_%a.out"), python=self.python,
                    submission=str(sub), offset=offset, cpus=cpus, ntasks=ntasks,
                    nodes=nodes, mem_mb=mem_mb,
                    time_s=job_time, signal_grace=grace, gpus=gpus, options=o,
                    dependency=dependency,
                    setup=bundles[0][0].setup if bundles[0][0].command is None else (),
                    cwd=bundles[0][0].cwd,
                )
                path = sub / f"array-{offset}.sh"
                path.write_text(text)
                job = commands.sbatch(str(path))
                ids.append(job)
                manifest.add(self.root, {  # (at once: a controller killed now loses none)
                    f"{job}_{k}": [[s.step, s.key, s.token, s.fingerprint]
                                   for s in bundles[offset + k]] for k in range(n)})
                self.submissions += 1
                with open(jobs_file(self.root), "a") as fh:  # for `shoal cancel`
                    fh.write(f"{job}\t{step}\t{n}\t{time.time():.0f}\n")
                for k in range(n):
                    self.elements[(job, k)] = _Element(job, k, bundles[offset + k])
        self._interval = self.options.poll_s
        self._last_squeue = time.time()
        return ids

    # ---------------------------------------------------------------- progress
    @property
    def running(self) -> int:
        n = sum(len(b) for b in self.pending)
        return n + sum(len(e.specs) - len(e.reported) for e in self.elements.values())

    def poll(self, timeout: float) -> list[Outcome]:
        out: list[Outcome] = []
        if self.stopped and self.pending:  # never submitted: they come back as not started
            out = [W.outcome(s, TaskStatus.UNSTARTED) for b in self.pending for s in b]
            self.pending = []
            return out
        if self.pending:
            self._submit()
        now = time.time()
        if self.elements and now - self._last_squeue >= self._interval:
            self._last_squeue = now
            try:
                live = commands.squeue({job for job, _ in self.elements})
            except commands.SlurmError as exc:  # no news this time: back off, never give up
                print(f"shoal: warning: {exc}; trying again", file=sys.stderr)
                self._interval = min(self._interval * 2, self.options.max_poll_s)
                return out
            before = len(out)
            gone = [key for key in self.elements
                    if live.get(key) is None or commands.STATES.get(live[key]) == "ended"]
            for key, el in list(self.elements.items()):
                if key not in gone:
                    out.extend(self._collect(el, final=False, state=live.get(key)))
            if gone:
                # results first: most ended elements left one for every task
                unsure = [k for k in gone if self._collect(self.elements[k], False, None,
                                                           peek=True)]
                finals = commands.final_states({job for job, _ in unsure}) if unsure else {}
                for key in gone:
                    el = self.elements.pop(key)
                    state = finals.get(key) or live.get(key)
                    out.extend(self._collect(el, final=True, state=state))
            changed = len(out) > before
            self._interval = self.options.poll_s if changed else min(
                self._interval * 1.5, self.options.max_poll_s)
        else:
            for el in list(self.elements.values()):
                out.extend(self._collect(el, final=False, state=None))
            if not out:
                time.sleep(min(timeout, 0.5))
        return out

    def _collect(self, el: _Element, final: bool, state: str | None,
                 peek: bool = False) -> list[Outcome]:
        """Outcomes of the element's tasks that have one now (a result or error file of
        *this* dispatch: its token); at the element's end, every task left without one fails
        with the element's final Slurm state (a PREEMPTED one comes back as not started: it
        goes out again without using an attempt). ``peek``: only whether some task would be
        left without a result (nothing is reported)."""
        out = []
        for spec in el.specs:
            if spec.key in el.reported:
                continue
            doc = resultfile.read_result(Path(spec.out))
            if doc and doc.get("token") == spec.token:
                if not peek:
                    el.reported.add(spec.key)
                    out.append(W.outcome(spec, TaskStatus.DONE, doc=doc))
                continue
            err = resultfile.read_error(Path(spec.out))
            if err and err.get("token") == spec.token:
                if peek:
                    continue
                if err.get("status") == TaskStatus.INTERRUPTED and not final:
                    continue  # Slurm may requeue the element, which then resumes the task
                el.reported.add(spec.key)
                if (err.get("status") == TaskStatus.SKIPPED
                        and (spec.step, spec.key) in self.adopted):
                    # a detached task that ran before this run's retry of its upstream task
                    self.adopted.discard((spec.step, spec.key))
                    out.append(W.outcome(spec, TaskStatus.UNSTARTED))
                else:
                    o = W.outcome(spec, err.get("status", TaskStatus.FAILED),
                                  error=err.get("error"), log_tail=err.get("log_tail"), doc=err)
                    if state == "CANCELLED":  # scancel / shoal cancel: stop, not requeue
                        o.may_requeue = False
                    out.append(o)
                continue
            if peek:
                return [W.outcome(spec, TaskStatus.FAILED)]  # (only its truth is read)
            if final:
                el.reported.add(spec.key)
                status, why = _LEFT.get(state or "", (
                    TaskStatus.FAILED, f"ended ({state or 'gone from the queue'})"))
                if state == "OUT_OF_MEMORY":  # (mem_retry_factor: more memory next time)
                    key = (spec.step, spec.key)
                    self.oom[key] = self.oom.get(key, 0) + 1
                out.append(W.outcome(spec, status, error=None if status == TaskStatus.UNSTARTED
                                     else f"Slurm job {el.job}_{el.index} {why} before this "
                                     "task's result"))
        return out

    # ---------------------------------------------------------------- stopping
    def running_specs(self) -> list[tuple[TaskSpec, float]]:
        return []  # Slurm enforces --time itself

    def kill(self, spec: TaskSpec, reason: str,
             status: str = TaskStatus.FAILED) -> list[Outcome]:
        for el in self.elements.values():
            if any(s is spec for s in el.specs):
                commands.scancel([f"{el.job}_{el.index}"])
        return []

    def signal_stop(self, deadline: float) -> None:
        """Cancel this run's jobs (Slurm sends SIGTERM, then SIGKILL after its KillWait, not
        at ``deadline``); what was not submitted yet is not submitted."""
        self.stopped = True
        commands.scancel({job for job, _ in self.elements})

    def shutdown(self) -> None:
        if self.elements:
            commands.scancel({job for job, _ in self.elements})
