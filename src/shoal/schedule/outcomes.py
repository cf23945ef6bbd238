"""What the controller does with an outcome: the move the one retry rule gives
(:func:`shoal.state.status.next_move`), applied by a table of handlers — done (release what
waited on it), retry, requeue (preemption, a requeued job, the end of a chained segment:
without using an attempt), stop (interrupted by the run's stop), fail (skip what depends on
it), again (never started: queue it again)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from shoal.plan.build import BLOCKED, DONE, StepPlan
from shoal.state.status import Move, Outcome, TaskStatus, next_move
from shoal.state.store import TaskRecord

if TYPE_CHECKING:
    from shoal.schedule.controller import Controller, _Running

TaskId = tuple[int, int]  # (step index, task index)

# The outcome half of :class:`~shoal.schedule.controller.Controller`: functions of the
# controller, bound into its class body (so the type checker sees ``self`` as the controller).


def _max_requeues(self: Controller, sp: StepPlan) -> int:
    """Interruptions a task may have in one run: ``max_requeues``, plus the segments of
    a task longer than the cluster's longest job."""
    extra = self.backend.segments(sp.name, sp.step.resources.time_s) - 1
    return self.options.max_requeues + extra


def segment(self: Controller, tid: TaskId) -> tuple[int, int] | None:
    """(k, n): the running task is in segment k of n (None when it is not chained)."""
    k = tid[0]
    n = self._segments.get(k)
    if n is None:
        sp = self.sps[k]
        n = self._segments[k] = self.backend.segments(sp.name, sp.step.resources.time_s)
    return (self.requeues.get(tid, 0) + 1, n) if n > 1 else None


def _max_attempts(self: Controller, sp: StepPlan) -> int:
    r = sp.step.retries
    if r is None:
        r = self.options.retries if self.options.retries is not None else self.exp.retries
    return 1 + int(r or 0)


def _ingest(self: Controller, o: Outcome) -> None:
    run = self.running.pop((o.step, o.key), None)
    if run is None:
        return
    k, i = run.tid
    sp = self.sps[k]
    if run.holds_slot:
        self.slots.give(run.res, run.cpus, run.devices)
    self.counts[k].running -= 1
    requeues = self.requeues.get(run.tid, 0)
    if o.status == TaskStatus.INTERRUPTED and not self.stopping and o.may_requeue:
        requeues = self.requeues[run.tid] = requeues + 1
    if o.status == TaskStatus.DONE:  # (the common case: no limits to look up per task)
        move = Move.DONE
    else:
        move = next_move(o.status, attempt=self.attempt[run.tid],
                         max_attempts=self._max_attempts(sp), requeues=requeues,
                         max_requeues=self._max_requeues(sp), stopping=self.stopping,
                         may_requeue=o.may_requeue)
    if move is not Move.AGAIN:
        doc = o.doc or {}
        self.attempt_rows.append((sp.name, sp.keys[i], run.spec.attempt, o.status, sp.fps[i],
                                  doc.get("started"), doc.get("ended"), doc.get("host"),
                                  o.error, None))
        self.report.ran += 1
    _MOVES[move](self, run, o)


def _record(self: Controller, run: _Running, o: Outcome, status: TaskStatus) -> TaskRecord:
    """The store's record of an attempt that did not succeed."""
    k, i = run.tid
    sp = self.sps[k]
    rec = TaskRecord.from_result(o.doc, status) if o.doc else TaskRecord(
        sp.name, sp.keys[i], status, fp=sp.fps[i], code=sp.code, params=run.spec.params,
        attempts=run.spec.attempt)
    rec.status = status
    rec.error = o.error or rec.error
    rec.log_tail = o.log_tail or rec.log_tail
    self.records.append(rec)
    return rec


def _again(self: Controller, run: _Running, o: Outcome) -> None:
    """Queued behind a task that stopped or died: not an attempt; queued again."""
    self.attempt[run.tid] -= 1
    if not self.stopping:
        self.ready[run.tid[0]].appendleft(run.tid[1])


def _done(self: Controller, run: _Running, o: Outcome) -> None:
    k, i = run.tid
    sp = self.sps[k]
    doc = o.doc or {}
    rec = TaskRecord.from_result(doc, TaskStatus.DONE)
    self.records.append(rec)
    sp.state[i] = DONE
    sp.run_ids[i] = rec.run_id
    self.builder.done(sp, i, rec.metrics or {})
    self.counts[k].done += 1
    self.report.done += 1
    d = self.durations[k]
    d[0] += 1
    d[1] += float(doc.get("duration") or 0.0)
    for child in self.children.get(run.tid, ()):
        n = self.waiting[child] - 1
        self.waiting[child] = n
        if n == 0 and not self.stopping:
            self.ready[child[0]].append(child[1])


def _retry(self: Controller, run: _Running, o: Outcome) -> None:
    _record(self, run, o, o.status)
    self.ready[run.tid[0]].appendleft(run.tid[1])


def _requeue(self: Controller, run: _Running, o: Outcome) -> None:
    """Preempted, requeued or at the end of a segment: it saved a checkpoint and goes on
    in a new job, without using an attempt (up to max_requeues)."""
    _record(self, run, o, TaskStatus.INTERRUPTED)
    self.attempt[run.tid] -= 1
    self.ready[run.tid[0]].appendleft(run.tid[1])


def _stop(self: Controller, run: _Running, o: Outcome) -> None:
    """Interrupted (or failed) while the run stops: it runs again next time."""
    _record(self, run, o, TaskStatus.INTERRUPTED)
    self.counts[run.tid[0]].interrupted += 1
    self.report.interrupted += 1


def _fail(self: Controller, run: _Running, o: Outcome) -> None:
    k = run.tid[0]
    sp = self.sps[k]
    error = o.error or "failed"
    if o.status == TaskStatus.INTERRUPTED:  # too often: no retry either
        n = self.requeues.get(run.tid, 0)
        error = o.error = (f"interrupted {n} times (more than max_requeues="
                           f"{self._max_requeues(sp)}): {o.error}")
    _record(self, run, o, TaskStatus.FAILED if o.status == TaskStatus.INTERRUPTED
            else o.status)
    self.counts[k].failed += 1
    self.report.failed += 1
    self.report.failures.append((run.spec.label, error))
    self._skip_downstream(run.tid, run.spec.label)
    if not self.options.keep_going:  # stop launching; running tasks finish
        self.stopping = True
        self.report.stopped = True
        self.stop_deadline = float("inf")


def _skip_downstream(self: Controller, tid: TaskId, label: str,
                     why: str = "failed") -> None:
    """Skip what depends on a failed task; a gather with ``allow_missing=True`` instead
    counts the task as finished and runs on what succeeded."""
    todo = [(child, tid[0]) for child in self.children.get(tid, ())]
    while todo:
        child, parent_k = todo.pop()
        k, i = child
        sp = self.sps[k]
        if self.waiting.get(child, -1) < 0:  # already skipped (or not to run)
            continue
        if sp.step.allow_missing and self.sps[parent_k].name in self._over[k]:
            self.waiting[child] -= 1  # a missing row for the gather, not a reason to skip
            if self.waiting[child] == 0 and not self.stopping:
                self.ready[k].append(i)
            continue
        self.waiting[child] = -1
        self.counts[k].skipped += 1
        self.report.skipped += 1
        self.records.append(TaskRecord(
            sp.name, sp.keys[i], TaskStatus.SKIPPED, fp=sp.fps[i], code=sp.code,
            params=sp.param_dict(i), error=f"skipped: upstream {label} {why}",
        ))
        todo.extend((c, k) for c in self.children.get(child, ()))


def _block(self: Controller, k: int, sp: StepPlan) -> None:
    """Tasks whose input files are missing (planned with missing_inputs="skip") do not
    run, and neither does what depends on them; each says why."""
    for i, s in enumerate(sp.state):
        tid = (k, i)
        if s != BLOCKED or tid not in self.waiting:
            continue
        self.waiting[tid] = -1
        label = sp.label(i)
        why = sp.detail.get(i, "an input is missing")
        self.report.blocked.append((label, why))
        self.counts[k].skipped += 1
        self.records.append(TaskRecord(
            sp.name, sp.keys[i], TaskStatus.SKIPPED, fp=sp.fps[i], code=sp.code,
            params=sp.param_dict(i), error=f"not run: {why}",
        ))
        self._skip_downstream(tid, label, "is blocked")


_MOVES: dict[Move, Callable[[Controller, _Running, Outcome], None]] = {
    Move.AGAIN: _again, Move.DONE: _done, Move.RETRY: _retry, Move.REQUEUE: _requeue,
    Move.STOP: _stop, Move.FAIL: _fail,
}
