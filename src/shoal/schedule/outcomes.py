"""What the controller does with an outcome: done (release what waited on it), failed
(retry, or skip what depends on it), interrupted (requeue: preemption, a requeued job, the
end of a chained segment — without using an attempt), not started (queue it again)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.plan.build import BLOCKED, DONE, StepPlan
from shoal.state.status import TaskStatus
from shoal.state.store import TaskRecord

if TYPE_CHECKING:
    from shoal.schedule.controller import Controller

TaskId = tuple[int, int]  # (step index, task index)

# The outcome half of :class:`~shoal.schedule.controller.Controller`: functions of the controller,
# bound into its class body (so the type checker sees ``self`` as the controller).


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

def _ingest(self: Controller, o: dict[str, Any]) -> None:
    run = self.running.pop((o["step"], o["key"]), None)
    if run is None:
        return
    k, i = run.tid
    sp = self.sps[k]
    if run.holds_slot:
        self.slots.give(run.res, run.cpus, run.devices)
    c = self.counts[k]
    c.running -= 1
    status = o["status"]
    if status == TaskStatus.UNSTARTED:  # queued behind a task that stopped or died: not an attempt
        self.attempt[run.tid] -= 1
        if not self.stopping:
            self.ready[k].appendleft(i)
        return
    doc = o.get("doc") or {}
    self.attempt_rows.append((sp.name, sp.keys[i], run.spec.attempt, status, sp.fps[i],
                              doc.get("started"), doc.get("ended"), doc.get("host"),
                              o.get("error"), None))
    self.report.ran += 1
    if status == TaskStatus.DONE:
        rec = TaskRecord.from_result(doc, TaskStatus.DONE)
        self.records.append(rec)
        sp.state[i] = DONE
        sp.run_ids[i] = rec.run_id
        self.builder.done(sp, i, rec.metrics or {})
        c.done += 1
        self.report.done += 1
        d = self.durations[k]
        d[0] += 1
        d[1] += float(doc.get("duration") or 0.0)
        for child in self.children.get(run.tid, ()):
            n = self.waiting[child] - 1
            self.waiting[child] = n
            if n == 0 and not self.stopping:
                self.ready[child[0]].append(child[1])
        return
    rec = TaskRecord.from_result(doc, status) if doc else TaskRecord(
        sp.name, sp.keys[i], status, fp=sp.fps[i], code=sp.code, params=run.spec.params,
        attempts=run.spec.attempt, error=o.get("error"))
    rec.error = o.get("error") or rec.error
    rec.log_tail = o.get("log_tail") or rec.log_tail
    self.records.append(rec)
    if status == TaskStatus.INTERRUPTED and not self.stopping and not o.get("no_requeue"):
        # preempted, requeued or at the end of a segment: it saved a checkpoint and
        # goes on in a new job, without using an attempt (up to max_requeues)
        n = self.requeues[run.tid] = self.requeues.get(run.tid, 0) + 1
        if n <= self._max_requeues(sp):
            rec.status = TaskStatus.INTERRUPTED
            self.attempt[run.tid] -= 1
            self.ready[k].appendleft(i)
            return
        status = TaskStatus.FAILED
        o["error"] = (f"interrupted {n} times (more than max_requeues="
                      f"{self._max_requeues(sp)}): {o.get('error')}")
        rec.status, rec.error = status, o["error"]
        self.attempt[run.tid] = self._max_attempts(sp)  # no retry either
    if status == TaskStatus.INTERRUPTED or self.stopping:
        rec.status = TaskStatus.INTERRUPTED
        c.interrupted += 1
        self.report.interrupted += 1
        return
    if self.attempt[run.tid] < self._max_attempts(sp):
        self.ready[k].appendleft(i)
        return
    c.failed += 1
    self.report.failed += 1
    self.report.failures.append((run.spec.label, o.get("error") or "failed"))
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
