"""The one worker entry: run one slot's worth of task specs in this process, wherever the
engine put it — a local worker process, a Slurm array element, a Ray task.

A slot's worth is a pack (one call of the step function for all its members), or a bundle
of function or command tasks run one after the other. Each task writes its own result or
error file; :func:`execute` yields its :class:`~shoal.state.status.Outcome` as it ends.

Where no controller follows the tasks (``--detach``), each spec carries what the controller
would do: its retries (``spec.retries``, decided by the same rule, :func:`next_move`), and the
upstream tasks whose result files it reads first (:mod:`shoal.worker.deferred`). An engine
that may start the same dispatch twice (Slurm requeues an element) passes ``resume=True``:
a task whose dispatch already ended is not run again.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from shoal.spec.experiment import Experiment
from shoal.state import resultfile
from shoal.state.status import Move, Outcome, TaskStatus, next_move
from shoal.worker import command, deferred, gang
from shoal.worker import task as W
from shoal.worker.packs import run_pack
from shoal.worker.taskspec import TaskSpec


def execute(specs: list[TaskSpec], experiment: Callable[[], Experiment], *,
            resume: bool = False, announce: bool = False) -> Iterator[Outcome]:
    """Run ``specs`` here; yield each task's outcome when it ends. ``experiment``: gives
    the experiment (only called when a function step needs it). ``announce``: say each
    attempt on stdout (a cluster job's log). Never raises for a task's failure, nor for
    shoal's own (a full disk: that task fails, visibly)."""
    if specs and specs[0].packed:
        yield from _pack(specs, experiment, resume)
        return
    for spec in specs:
        if resume and finished(spec):
            continue
        if W.stop_requested():  # asked to stop: start nothing more
            yield W.outcome(spec, TaskStatus.UNSTARTED)
            continue
        if spec.upstream is not None:  # submitted before its upstream tasks ran
            why = deferred.resolve(spec)
            if why is not None:
                yield deferred.write_skipped(spec, why)
                continue
        yield _with_retries(spec, experiment, announce)


def _with_retries(spec: TaskSpec, experiment: Callable[[], Experiment],
                  announce: bool) -> Outcome:
    first = spec.attempt
    while True:
        if announce:
            print(f"shoal: {spec.label} (attempt {spec.attempt})", flush=True)
        o = _once(spec, experiment)
        move = next_move(o.status, attempt=spec.attempt - first + 1,
                         max_attempts=1 + spec.retries, stopping=W.stop_requested(),
                         may_requeue=False)
        if move is not Move.RETRY:  # (spec.retries: only where no controller retries)
            return o
        spec.attempt += 1


def _once(spec: TaskSpec, experiment: Callable[[], Experiment]) -> Outcome:
    try:
        if spec.procs > 1:  # its ranks: processes of their own (shoal.worker.gang)
            return gang.run_ranks(spec)
        if spec.command is not None:
            return command.run_command(spec)
        return W.run_function(spec, experiment())
    except Exception as exc:  # shoal's own failure: this task fails, the bundle goes on
        traceback.print_exc()
        return own_failure(spec, exc)


def _pack(specs: list[TaskSpec], experiment: Callable[[], Experiment],
          resume: bool) -> Iterator[Outcome]:
    todo = []
    for s in specs:
        if resume and finished(s):
            continue
        why = deferred.resolve(s) if s.upstream is not None else None
        if why is not None:
            yield deferred.write_skipped(s, why)
        else:
            todo.append(s)
    first = todo[0].attempt if todo else 0
    while todo:
        if W.stop_requested():
            yield from (W.outcome(s, TaskStatus.UNSTARTED) for s in todo)
            return
        try:
            outcomes = run_pack(todo, experiment())
        except Exception as exc:  # shoal's own failure: every member fails, visibly
            traceback.print_exc()
            outcomes = [own_failure(s, exc) for s in todo]
        again = []
        for s, o in zip(todo, outcomes):
            move = next_move(o.status, attempt=s.attempt - first + 1,
                             max_attempts=1 + s.retries, stopping=W.stop_requested(),
                             may_requeue=False)
            if move is Move.RETRY:  # (retried as a pack: --detach)
                s.attempt += 1
                again.append(s)
            else:
                yield o
        todo = again


def own_failure(spec: TaskSpec, exc: BaseException) -> Outcome:
    """The task failed because shoal could not do its part (a full disk, a vanished
    folder): said in its error file where that can still be written."""
    try:
        return W.write_failure(spec, TaskStatus.FAILED, f"{type(exc).__name__}: {exc}",
                               time.time())
    except Exception:
        return W.outcome(spec, TaskStatus.FAILED, error=f"{type(exc).__name__}: {exc}")


def finished(spec: TaskSpec) -> bool:
    """Whether this dispatch of the task already ended (done, failed or skipped: its token
    is in the result or error file); an interrupted one resumes."""
    doc = resultfile.read_result(Path(spec.out))
    if doc and doc.get("token") == spec.token:
        return True
    err = resultfile.read_error(Path(spec.out))
    return bool(err and err.get("token") == spec.token
                and err.get("status") != TaskStatus.INTERRUPTED)
