"""Packs: several tasks of one step that differ only in the packed dimensions, run by one
call of the step function (e.g. 30 seeds of a small model trained as one stacked model).

``@exp.step(per=["site", "factor", "seed"], pack=["seed"], pack_size=30)`` makes the
controller hand up to 30 ready tasks with the same ``site`` and ``factor`` to one call::

    def train(pack, site, factor, seed):      # seed: the list of the members' seeds
        for member in pack.members:            # per-task contexts: .params, .out, .checkpoint
            ...
        return [{"loss": ...} for member in pack.members]   # one result per member

Each member keeps its own folder, result file, log, status and fingerprint. A result that is
an exception fails that member only (``shoal.Requeue`` interrupts it; returned instead of
the list, every member); an exception raised
by the function fails the whole pack. A pack occupies the step's resources once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.context.task import Requeue, TaskContext
from shoal.spec.experiment import Experiment
from shoal.state import resultfile
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import task as W
from shoal.worker.taskfolder import prepare_task
from shoal.worker.taskspec import TaskSpec


@dataclass
class PackContext:
    """What a packed step function gets instead of one task's ``ctx``."""

    step: str
    members: list[TaskContext]
    packed: tuple[str, ...]  # the packed dimensions
    params: dict[str, list[Any]]  # every dimension's values, one per member
    threads: int = 1
    device: str = "cpu"
    _stop: Callable[[], bool] = field(default=lambda: False, repr=False)
    _log: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.members)

    def should_stop(self) -> bool:
        """True once shoal asked the pack to stop (see ``TaskContext.should_stop``)."""
        return self._stop()

    @property
    def log(self) -> Any:
        """A logger writing to every member's log."""
        if self._log is None:
            self._log = self.members[0].log
        return self._log

    def key(self, member: TaskContext) -> Any:
        """The member's values of the packed dimensions (one value when one is packed)."""
        values = tuple(member.params[d] for d in self.packed)
        return values[0] if len(values) == 1 else values


def _member_results(pack: PackContext, value: Any) -> list[Any]:
    n = len(pack.members)
    if value is Requeue:  # (the whole pack stopped on request: every member requeued)
        return [Requeue] * n
    if isinstance(value, Mapping):
        missing = [pack.key(m) for m in pack.members if pack.key(m) not in value]
        if missing:
            raise TypeError(f"the packed step's result dict has no entry for {missing[:3]} "
                            f"(keys are the members' {', '.join(pack.packed)} values)")
        return [value[pack.key(m)] for m in pack.members]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != n:
            raise TypeError(f"the packed step returned {len(value)} results for {n} members; "
                            "return one per member, in member order (or a dict by key)")
        return list(value)
    raise TypeError(f"a packed step must return a list (one result per member) or a dict "
                    f"keyed by the packed values, got {type(value).__name__}")


def run_pack(specs: list[TaskSpec], exp: Experiment,
             should_stop: Callable[[], bool] = W.stop_requested) -> list[Outcome]:
    """Run the members ``specs`` of one pack in this process; one outcome per member."""
    started = time.time()
    first = specs[0]
    step = exp.steps[first.step]
    for s in specs:
        try:
            prepare_task(s)
        except OSError as exc:
            return [W.outcome(m, TaskStatus.FAILED,
                              error=f"cannot prepare task folder {s.out}: {exc}") for m in specs]
    members_line = (f"shoal: pack of {len(specs)}: "
                    f"{', '.join(s.label for s in specs[:8])}{', ...' if len(specs) > 8 else ''}")
    try:
        offset = os.path.getsize(f"{first.out}/{resultfile.LOG}")
    except OSError:
        offset = 0
    with W.redirected_output(first, W.header(first, started)):
        print(members_line, flush=True)
        try:
            staged = W.enter(first)
            members = [W.task_context(s, should_stop, staged) for s in specs]
            dims = list(first.params)
            pack = PackContext(
                step=first.step, members=members, packed=tuple(step.pack),
                params={d: [s.params[d] for s in specs] for d in dims},
                threads=first.cpus, device=first.device, _stop=should_stop,
            )
            takes, _ = W._signature(step)
            kwargs = {d: (pack.params[d] if d in step.pack else first.params[d]) for d in takes}
            assert step.fn is not None
            results = _member_results(pack, step.fn(pack, **kwargs))
        except BaseException as exc:  # the whole pack failed (or was interrupted)
            status, error = W.caught(exc)
            results = None
    _share_log(specs, offset, W.header(first, started), started)
    if results is None:
        return [W.write_failure(s, status, error, started) for s in specs]
    return [W.finish(s, r, started) for s, r in zip(specs, results)]


def _share_log(specs: list[TaskSpec], offset: int, header: str, started: float) -> None:
    """Every member's log gets the pack's output of this call (it ran once, for all),
    after its own header line."""
    try:
        with open(f"{specs[0].out}/{resultfile.LOG}", "rb") as fh:
            fh.seek(offset)
            part = fh.read(1 << 24)
    except OSError:
        return
    head = header.encode()
    if part.startswith(head):
        part = part[len(head):]
    if not part:
        return
    for s in specs[1:]:
        try:
            with open(f"{s.out}/{resultfile.LOG}", "ab") as fh:
                fh.write(W.header(s, started).encode() + part)
        except OSError:
            continue
