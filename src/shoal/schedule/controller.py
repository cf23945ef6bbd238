"""The controller loop: ready set by dependencies, resource slots, retries, keep-going, stop.

Backend-agnostic: a backend ``start``s task specs, ``poll``s for outcomes, ``kill``s and
``signal_stop``s. The controller alone writes the store (in batches), from the outcomes the
workers' result files also hold.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.backends.base import Backend
from shoal.errors import ShoalError
from shoal.plan.build import BLOCKED, CHANGED, DONE, Plan, StepPlan
from shoal.schedule import bundling, detached, outcomes
from shoal.schedule.dispatch import SpecBuilder
from shoal.schedule.outcomes import TaskId
from shoal.schedule.runreport import RunOptions, RunReport, StepCounts
from shoal.schedule.slots import Slots
from shoal.spec.resources import Resources
from shoal.state.resultfile import HOST
from shoal.state.status import TaskStatus
from shoal.state.store import Store, TaskRecord, db_path
from shoal.worker.taskspec import TaskSpec


@dataclass(eq=False, slots=True)
class _Running:
    tid: TaskId
    spec: TaskSpec
    res: Resources
    cpus: int
    devices: list[str]
    holds_slot: bool = True




class Controller:
    """Runs the tasks a plan says to run, in dependency order, within the slots."""

    # what it does with an outcome (shoal.schedule.outcomes)
    _max_requeues = outcomes._max_requeues
    segment = outcomes.segment
    _max_attempts = outcomes._max_attempts
    _ingest = outcomes._ingest
    _skip_downstream = outcomes._skip_downstream
    _block = outcomes._block
    # what goes to one slot at once (shoal.schedule.bundling)
    _take_pack = bundling.take_pack
    _bundle_size = bundling.bundle_size
    # --detach: the same dispatch, in one pass, not followed (shoal.schedule.detached)
    submit_detached = detached.submit_detached

    def __init__(
        self, plan: Plan, store: Store, backend: Backend, slots: Slots, options: RunOptions,
        on_progress: Callable[[Controller], None] | None = None,
    ) -> None:
        self.plan, self.store, self.backend, self.slots = plan, store, backend, slots
        self.options = options
        self.exp = plan.experiment
        self.sps: list[StepPlan] = list(plan.steps.values())
        self.index = {sp.name: k for k, sp in enumerate(self.sps)}
        self.total_cpus = slots.cpus
        self._total_mem = slots.mem_mb  # (what the slots were made with: grows with grown())
        self.ready: list[deque[int]] = [deque() for _ in self.sps]
        self.waiting: dict[TaskId, int] = {}
        self.children: dict[TaskId, list[TaskId]] = {}
        self.attempt: dict[TaskId, int] = {}  # attempts in this run
        self.requeues: dict[TaskId, int] = {}  # interruptions (not by the user) in this run
        self._segments: dict[int, int] = {}  # step -> jobs per task (chained segments)
        self.base_attempt: dict[TaskId, int] = {}  # attempts in earlier runs (same fp)
        self.running: dict[tuple[str, str], _Running] = {}
        self.counts = [StepCounts() for _ in self.sps]
        self.durations = [[0, 0.0] for _ in self.sps]  # per step: tasks done, their seconds
        self.report = RunReport()
        self.records: list[TaskRecord] = []
        self.attempt_rows: list[tuple[Any, ...]] = []
        self.stopping = False
        self.killing = False
        self.stop_deadline = 0.0
        self.started = time.time()
        self.on_progress = on_progress
        #: checked about once a second: why the run must stop by itself (None: go on)
        self.guard: Callable[[], str | None] | None = None
        self._last_guard = 0.0
        self._last_flush = 0.0
        self._timeouts = any(sp.step.timeout_s is not None for sp in self.sps)
        self._last_check = 0.0
        self._last_grow = time.time()
        self.builder = SpecBuilder(plan, store, backend.assigns_devices,
                                   lambda: self._flush(force=True),
                                   node_stage=backend.stages_on_node)
        self._over = [{d.up.name for d in s.deps if d.many} for s in self.sps]
        self._defers_start = backend.defers_start
        self._unflushed_starts = False
        self._stored_running: set[tuple[str, str, int]] = set()  # (step, key, attempt)
        self._last_note = 0.0
        self._setup()
        for sp in self.sps:  # a missing stage= archive: one error before anything runs
            if any(s != DONE for s in sp.state):
                self.builder.archives(sp)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        for k, sp in enumerate(self.sps):
            c = self.counts[k]
            checked = False
            for i, s in enumerate(sp.state):
                if not sp.is_included(i):
                    continue
                c.total += 1
                if s == DONE:
                    c.done += 1
                    continue
                if not checked:
                    for res in sorted(sp.shapes(), key=lambda r: r.slot_cpus):
                        self._check_fits(sp, res)
                    checked = True
                tid = (k, i)
                n = 0
                for up, j in sp.upstream(i):
                    if up.state[j] != DONE:
                        n += 1
                        self.children.setdefault((self.index[up.name], j), []).append(tid)
                self.waiting[tid] = n
                if n == 0 and s != BLOCKED:  # (blocked: recorded by _block, never ready)
                    self.ready[k].append(i)
            if checked:
                self._load_attempts(k, sp)
            self._block(k, sp)
            for doc in sp.adopted.values():
                self.records.append(TaskRecord.from_result(doc, TaskStatus.DONE))
                self.report.adopted += 1

    def _load_attempts(self, k: int, sp: StepPlan) -> None:
        """Attempts numbers go on across runs while the fingerprint stays the same."""
        rows = self.store._query("SELECT key, fp, attempts FROM tasks WHERE step=?", (sp.name,))
        if not rows:
            return
        index = {key: i for i, key in enumerate(sp.keys)}
        for key, fp, attempts in rows:
            i = index.get(key)
            if i is not None and attempts and fp == sp.fps[i] and (k, i) in self.waiting:
                self.base_attempt[(k, i)] = int(attempts)

    def _check_fits(self, sp: StepPlan, res: Resources) -> None:
        total = self.total_cpus
        if res.slot_cpus > total:
            asks = (f"cpus={res.cpus} x procs={res.procs}" if res.procs > 1
                    else f"cpus={res.cpus}")
            self.report.warnings.append(
                f"step '{sp.name}' asks for {asks}; it runs with {total}, all this run has "
                f"(-j {total})")
        s = self.slots
        if sp.step.nodes > 1 and not s.unlimited:
            self.report.warnings.append(
                f"step '{sp.name}' spreads its ranks over nodes={sp.step.nodes} on a cluster; "
                "here all of them run on this machine")
        if s.unlimited:
            return
        if res.gpus > 0 and (len(s.gpus) < max(1, int(res.gpus))):
            have = ", ".join(map(str, s.gpus)) or "none"
            where, fix = ("this machine", "run where GPUs are, pass --gpus, or lower gpus=")
            if self.backend.grown() is not None:  # (a cluster that can grow: Ray)
                where, fix = (f"the {self.backend.name} cluster", "add GPU nodes, or say what "
                              "an autoscaling cluster may grow to (gpus = N in the profile's "
                              f"[{self.backend.name}] table)")
            raise ShoalError(f"step '{sp.name}' asks for gpus={res.gpus:g} but {where} offers "
                             f"{len(s.gpus)} GPU(s) ({have}); {fix}")
        if res.mem_mb and s.mem_mb is not None and res.mem_mb > s.mem_mb:
            raise ShoalError(
                f"step '{sp.name}' asks for mem={res.mem_mb} MiB but this machine has "
                f"{s.mem_mb} MiB; lower mem= (or pass --mem to hand out more)"
            )

    # ------------------------------------------------------------------ loop
    @property
    def todo(self) -> int:
        """Tasks this run has to run (at the start)."""
        return len(self.waiting)

    def run(self) -> RunReport:
        if not self.waiting:
            self._flush(force=True)
            return self.report
        # HUP: the terminal closed; USR2: a cluster job running `shoal run` nears its end
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)
        old = {sig: signal.getsignal(sig) for sig in stops}
        for sig in old:
            signal.signal(sig, self._on_signal)
        try:
            self._loop()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            try:  # (it may wait out the grace period: a Ctrl-C there cuts it short)
                self.backend.shutdown()
            finally:
                self._flush(force=True)
            r = self.report
            r.not_started = max(0, len(self.waiting) - r.done - r.failed - r.skipped
                                - r.interrupted - len(r.blocked))
            self.report.elapsed = time.time() - self.started
            if self.on_progress:
                self.on_progress(self)
        return self.report

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.report.user_stopped = True
        if self.stopping:
            self.killing = True
            return
        self.request_stop()

    def request_stop(self) -> None:
        """Stop launching; ask running tasks to stop; kill them after the grace period."""
        if not self.stopping:
            self.stopping = True
            self.report.stopped = True
            self.stop_deadline = time.time() + self.options.grace_s
            self.backend.signal_stop(self.stop_deadline)

    def _loop(self) -> None:
        last_progress = 0.0
        while True:
            if not self.stopping:
                self._dispatch()
            if not self.running and (self.stopping or not any(self.ready)):
                break
            if self._unflushed_starts:  # a deferring backend starts them in poll()
                self._flush(force=True)
                self._unflushed_starts = False
            else:  # (after the dispatch: a slot that came free is busy again meanwhile)
                self._flush()
            now = time.time()
            if self.on_progress and now - last_progress >= 0.25:
                last_progress = now
                self.on_progress(self)
            for outcome in self.backend.poll(0.2):
                self._ingest(outcome)
            now = time.time()
            self._check_time(now)
            self._note_long_runs(now)
            self._grow(now)
            if self.guard is not None and now - self._last_guard >= 1.0:
                self._last_guard = now
                why = self.guard()
                if why and self.report.aborted is None:
                    self.report.aborted = why
                    self.request_stop()

    def _grow(self, now: float) -> None:
        """Nodes that joined the engine's cluster (an autoscaler) take tasks too."""
        if now - self._last_grow < 5.0:
            return
        self._last_grow = now
        got = self.backend.grown()
        if got is None:
            return
        cpus, devices, mem = got
        if cpus > self.total_cpus:
            self.slots.cpus += cpus - self.total_cpus
            self.total_cpus = cpus
        for d in devices:
            self.slots.gpus.setdefault(d, 1.0)
        if mem is None:
            self.slots.mem_mb = None  # (no longer limited here: the engine places by it)
        elif self.slots.mem_mb is not None and self._total_mem is not None \
                and mem > self._total_mem:
            self.slots.mem_mb += mem - self._total_mem
            self._total_mem = mem

    def _note_long_runs(self, now: float) -> None:
        """A member of a bundle that has run a second is stored as running too (its
        bundle's first was at the start), so that `shoal status` shows it."""
        if self._defers_start or now - self._last_note < 0.5:
            return
        self._last_note = now
        for spec, started in self.backend.running_specs():
            run = self.running.get((spec.step, spec.key))
            if run is not None and now - started > 1.0 and (
                (spec.step, spec.key, spec.attempt) not in self._stored_running
            ):
                self._store_running(run.tid, spec, started)

    def _dispatch(self) -> None:
        for k in range(len(self.sps) - 1, -1, -1):  # downstream first: results flow early
            queue = self.ready[k]
            if not queue:
                continue
            sp = self.sps[k]
            varies = bool(sp.step.resource_dims)
            res = sp.step.resources
            while queue and not self.stopping:
                if varies:  # (resources from the task's params: the next task's)
                    res = sp.resources(queue[0])
                cpus = min(res.slot_cpus, self.total_cpus)  # (all its processes')
                devices = self.slots.place(res, cpus)
                if devices is None:
                    break
                if sp.step.pack:
                    tids = [(k, i) for i in self._take_pack(sp, queue)]
                else:
                    n = self._bundle_size(k, len(queue), cpus)
                    tids = [(k, queue.popleft()) for _ in range(min(n, len(queue)))]
                self._start(tids, res, cpus, devices)

    def _start(
        self, tids: list[TaskId], res: Resources, cpus: int, devices: list[str]
    ) -> None:
        specs = []
        now = time.time()
        guard = False
        for n, tid in enumerate(tids):
            k, i = tid
            sp = self.sps[k]
            self.attempt[tid] = self.attempt.get(tid, 0) + 1
            attempt = self.base_attempt.get(tid, 0) + self.attempt[tid]
            spec = self.builder.build(sp, i, attempt, cpus, devices)
            spec.packed = bool(sp.step.pack)
            specs.append(spec)
            holds = n == len(tids) - 1  # the last of a bundle gives the slot back
            self.running[(sp.name, sp.keys[i])] = _Running(tid, spec, res, cpus, devices, holds)
            self.counts[k].running += 1
            # the store must never keep a "done" record beside a folder a worker emptied for
            # a rerun (a killed controller): such a task's "running" record is stored before
            # it starts; the others' with the next flush. A local bundle's later members
            # wait in its queue: they are not recorded running (their outcome comes soon)
            rerun = sp.state[i] == CHANGED or sp.detail.get(i) == "folder deleted"
            guard = guard or rerun
            if n and not rerun and not self._defers_start:
                continue
            self._store_running(tid, spec, now)
        self.slots.take(res, cpus, devices)
        if self._defers_start:  # (a backend that starts tasks in poll(): flushed before it)
            self._unflushed_starts = True
        elif guard:
            self._flush(force=True)
        self.backend.start(specs)

    def _store_running(self, tid: TaskId, spec: TaskSpec, started: float) -> None:
        k, i = tid
        sp = self.sps[k]
        self._stored_running.add((sp.name, sp.keys[i], spec.attempt))
        seg = self.segment(tid)
        self.records.append(TaskRecord(
            sp.name, sp.keys[i], TaskStatus.RUNNING, fp=sp.fps[i], code=sp.code,
            inputs=spec.inputs, params=spec.params, attempts=spec.attempt, started=started,
            host=HOST, segment=seg[0] if seg else None, segments=seg[1] if seg else None,
        ))

    def _check_time(self, now: float) -> None:
        if self._timeouts and now - self._last_check >= 0.05:  # (not on every outcome)
            self._last_check = now
            for spec, started in self.backend.running_specs():
                if spec.timeout_s is not None and now - started > spec.timeout_s:
                    for o in self.backend.kill(spec, f"timeout after {spec.timeout_s:g} s"):
                        self._ingest(o)
        if self.killing and self.stop_deadline > now:  # (a second signal: no more grace)
            self.stop_deadline = now
            self.backend.signal_stop(now)
        if self.stopping and self.running and (self.killing or now > self.stop_deadline):
            # (a user's stop: after the grace period; --fail-fast: never)
            for spec, _ in self.backend.running_specs():
                for o in self.backend.kill(spec, "stopped by user", TaskStatus.INTERRUPTED):
                    self._ingest(o)

    def _flush(self, force: bool = False) -> None:
        now = time.time()
        if not (self.records or self.attempt_rows):
            return
        if not force and now - self._last_flush < 0.25 and len(self.records) < 500:
            return
        self._last_flush = now
        recs, self.records = self.records, []
        rows, self.attempt_rows = self.attempt_rows, []
        if len(recs) > 1:  # a task that started and ended since the last flush: its last
            recs = list({(r.step, r.key): r for r in recs}.values())  # record only
        try:
            self.store.put(recs, attempts=rows)
        except (sqlite3.OperationalError, OSError) as exc:  # a full disk, a vanished store
            self.records, self.attempt_rows = recs + self.records, rows + self.attempt_rows
            if self.report.aborted is None:
                self.report.aborted = (
                    f"cannot write the store {db_path(self.plan.root)}: {exc} (is its disk "
                    "full?): stopping. What finished is in the tasks' result files: free "
                    "space, then `shoal status --rescan` and `shoal run` go on")
                self.request_stop()
