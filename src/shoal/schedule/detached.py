"""``--detach``: the controller's dispatch as one pass over the whole plan, without following
what it submitted. Every task to run goes out step after step through the same spec
builder, attempt numbers, retry rule and pack/bundle grouping as an attached run; each
step's jobs start after the jobs of the steps it needs (the backend's dependencies), and a
task whose upstream tasks had not run reads their result files first
(:mod:`shoal.worker.deferred`). Retries happen in the worker (``spec.retries``, by the same
rule as the controller's). A function of the controller, bound into its class."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from shoal.errors import ShoalError
from shoal.plan.build import DONE
from shoal.schedule.runreport import DetachReport
from shoal.state.resultfile import HOST
from shoal.state.status import TaskStatus
from shoal.state.store import TaskRecord
from shoal.worker.taskspec import TaskSpec

if TYPE_CHECKING:
    from shoal.schedule.controller import Controller


def submit_detached(self: Controller) -> DetachReport:
    """Submit every task this run has to run, and return (see the module docstring).
    Every spec is built (and every check made) before the first submission."""
    t0 = time.time()
    be = self.backend
    if not be.detaches:
        raise ShoalError(f"--detach: the {be.name} backend runs tasks only while `shoal run` "
                         "follows them; run without --detach")
    report = DetachReport()
    work: list[tuple[str, list[str], list[list[TaskSpec]]]] = []
    for k, sp in enumerate(self.sps):
        todo = deque(i for i in range(len(sp.keys)) if self.waiting.get((k, i), -1) >= 0)
        if not todo:
            continue
        step = sp.step
        n_seg = be.segments(sp.name, step.resources.time_s)
        if n_seg > 1:
            raise ShoalError(
                f"step '{sp.name}': time={(step.resources.time_s or 0) / 3600:g}h needs {n_seg} "
                f"chained jobs, and --detach has no controller to chain them; run attached "
                "(without --detach) or raise --max-time")
        retries = self._max_attempts(sp) - 1
        bundles: list[list[TaskSpec]] = []
        while todo:
            cpus = min(sp.resources(todo[0]).slot_cpus, self.total_cpus)
            if step.pack:
                tids = [(k, i) for i in self._take_pack(sp, todo)]
            else:
                n = self._bundle_size(k, len(todo), cpus)
                tids = [(k, todo.popleft()) for _ in range(min(n, len(todo)))]
            bundle = []
            for tid in tids:
                i = tid[1]
                attempt = self.base_attempt.get(tid, 0) + 1
                waits = any(up.state[j] != DONE for up, j in sp.upstream(i))
                spec = (self.builder.build_deferred(sp, i, attempt, cpus) if waits
                        else self.builder.build(sp, i, attempt, cpus, []))
                spec.retries = retries
                spec.packed = bool(step.pack)
                bundle.append(spec)
            bundles.append(bundle)
        work.append((sp.name, sorted({d.up.name for d in sp.deps}), bundles))

    now = time.time()
    for name, after, bundles in work:
        report.arrays[name] = be.submit_detached(name, bundles, after)
        report.tasks[name] = sum(len(b) for b in bundles)
        sp = self.plan.steps[name]
        self.records.extend(TaskRecord(
            s.step, s.key, TaskStatus.SUBMITTED, fp=s.fingerprint, code=sp.code,
            inputs=s.inputs, params=s.params, attempts=s.attempt - 1, started=now, host=HOST,
        ) for b in bundles for s in b)
        self._flush(force=True)  # (each step's records once its jobs are out)
    report.submissions = be.submissions
    report.elapsed = time.time() - t0
    return report
