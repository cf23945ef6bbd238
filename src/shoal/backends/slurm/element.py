"""One array element: ``python -m shoal.backends.slurm.element SUBMISSION OFFSET``.

Runs bundle ``OFFSET + $SLURM_ARRAY_TASK_ID`` of the submission, task after task, each
writing its own result file (the controller never needs this process to report anything).
SIGTERM/SIGUSR2 (time limit, preemption, scancel) make ``ctx.should_stop()`` true and start
no further task of the bundle.
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
    from shoal import command, worker
    from shoal.loader import load_experiment
    from shoal.taskspec import TaskSpec

    specs = [TaskSpec.from_dict(d) for d in bundles[index]]
    worker.install_stop_handlers()
    first = specs[0]
    os.chdir(first.cwd)
    exp = None
    for spec in specs:
        if worker.stop_requested():
            print(f"shoal: stop requested; {spec.label} not started", flush=True)
            break
        print(f"shoal: {spec.label} (attempt {spec.attempt})", flush=True)
        if spec.command is not None:
            command.run_command(spec)
        else:
            if exp is None:
                exp = load_experiment(first.target, first.config, strict_config=False)
            worker.run_function(spec, exp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
