"""What one slot of the controller takes at once: the members of a pack (tasks that differ
only in the packed dimensions), or a bundle of short tasks (about ``BUNDLE_S`` seconds, as
measured in this run; a cluster backend decides by its own rule). Functions of the
controller, bound into :class:`~shoal.schedule.controller.Controller`."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from shoal.plan.build import StepPlan

if TYPE_CHECKING:
    from shoal.schedule.controller import Controller

BUNDLE_S = 0.2  # target length of a bundle of short tasks sent to one worker at once
MAX_BUNDLE = 256


def take_pack(self: Controller, sp: StepPlan, queue: deque[int]) -> list[int]:
    """The next pack: the first ready task and up to ``pack_size - 1`` others that
    differ from it only in the packed dimensions (ready tasks of one group are
    usually next to each other, so this looks at few entries)."""
    step = sp.step
    size = step.pack_size or len(sp.keys)
    cols = [j for j, d in enumerate(sp.dims) if d not in step.pack]
    params = sp.params
    head = queue.popleft()
    base = [params[head][j] for j in cols]
    pack, skipped = [head], []
    looked = 0
    while queue and len(pack) < size and looked < 4 * size + 64:
        i = queue.popleft()
        looked += 1
        if [params[i][j] for j in cols] == base:
            pack.append(i)
        else:
            skipped.append(i)
    queue.extendleft(reversed(skipped))
    return pack


def bundle_size(self: Controller, k: int, queued: int, cpus: int) -> int:
    """How many tasks of step ``k`` one slot takes at once. Short tasks (measured in
    this run) go in bundles of about ``BUNDLE_S`` seconds, so that the controller's
    round trip per task does not dominate; never so many that other slots go idle.
    A cluster backend decides by its own rule (tasks per job, the step's time=)."""
    step = self.sps[k].step
    if step.procs > 1 or step.resource_dims:  # (ranks of their own; or each its own shape)
        return 1
    own = self.backend.bundle_size(self.sps[k].name, self.sps[k].step.resources.time_s,
                                   queued)
    if own is not None:
        return own
    n_done, total = self.durations[k]
    if n_done < 2:
        return 1
    mean = max(total / n_done, 1e-5)
    if mean >= BUNDLE_S / 2:
        return 1
    slots = max(1, self.total_cpus // max(1, cpus))
    fair = -(-queued // slots)  # ceil: spread the queue over every slot
    return max(1, min(int(BUNDLE_S / mean), MAX_BUNDLE, fair))
