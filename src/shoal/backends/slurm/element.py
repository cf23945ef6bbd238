"""One array element: ``python -m shoal.backends.slurm.element SUBMISSION OFFSET``.

Runs bundle ``OFFSET + $SLURM_ARRAY_TASK_ID`` of the submission through the one worker entry
(:func:`shoal.worker.execute.execute`): each task writes its own result file (the
controller never needs this process to report anything). A requeued element skips the tasks
its first run finished. SIGTERM/SIGUSR2 (time limit, preemption, scancel) make
``ctx.should_stop()`` true and start no further task of the bundle.
"""

from __future__ import annotations

import os
import pickle
import sys


def main(argv: list[str]) -> int:
    submission, offset = argv[0], int(argv[1])
    index = offset + int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    with open(os.path.join(submission, "bundles.pkl"), "rb") as fh:
        bundles = pickle.load(fh)
    from shoal.spec.experiment import Experiment
    from shoal.spec.loader import load_experiment
    from shoal.state.status import TaskStatus
    from shoal.worker import task
    from shoal.worker.execute import execute
    from shoal.worker.taskspec import TaskSpec

    specs = [TaskSpec.from_dict(d) for d in bundles[index]]
    task.install_stop_handlers()
    first = specs[0]
    os.chdir(first.cwd)
    loaded: list[Experiment] = []

    def experiment() -> Experiment:
        if not loaded:
            loaded.append(load_experiment(first.target, first.config, strict_config=False))
        return loaded[0]

    if first.packed:
        print(f"shoal: pack of {len(specs)}: {first.label} ...", flush=True)
    for o in execute(specs, experiment, resume=True, announce=True):
        if o.status == TaskStatus.UNSTARTED:
            print(f"shoal: stop requested; {o.step}[{o.key}] not started", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
