"""One rank of a multi-process function task: ``python -m shoal.worker.rank SPEC RANK``.

Started by :mod:`shoal.worker.gang` with the rank's torch.distributed variables and its log
as stdout and stderr. It loads the experiment, calls the step function with ``ctx.rank`` and
``ctx.world_size``, and writes ``.shoal-ranks/RANK.json``: its status, its error, and (rank
0) the task's metrics. It never writes the task's result file: the gang does, once every
rank ended well. SIGTERM/SIGUSR2 make ``ctx.should_stop()`` true.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time


def main(argv: list[str]) -> int:
    path = argv[0]
    rank = int(os.environ["RANK"] if argv[1] == "env" else argv[1])  # ("env": srun set it)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (the controller decides)
    from shoal.spec.loader import load_experiment
    from shoal.state import resultfile
    from shoal.state.status import TaskStatus
    from shoal.worker import task as W

    W.install_stop_handlers()
    with open(path, "rb") as fh:
        spec = pickle.load(fh)
    report: dict[str, object] = {"status": TaskStatus.FAILED}
    try:
        os.chdir(spec.cwd)
        exp = load_experiment(spec.target, spec.config, strict_config=False)
        step = exp.steps[spec.step]
        ctx = W.task_context(spec, W.stop_requested, W.enter(spec))
        ctx.rank, ctx.world_size = rank, spec.starts
        if rank > 0:  # every rank may checkpoint: rank k's in a folder of its own
            ctx.checkpoint.folder = ctx.checkpoint.folder / f"rank-{rank}"
        takes, _ = W._signature(step)
        assert step.fn is not None
        value = step.fn(ctx, **{d: spec.params[d] for d in takes})
        if value is W.Requeue:
            raise W.Interrupted("the task returned shoal.Requeue")
        report = {"status": TaskStatus.DONE,
                  "metrics": W._metrics(value, ctx.out) if rank == 0 else None}
    except BaseException as exc:
        status, error = W.caught(exc)
        report = {"status": status, "error": error}
    sys.stdout.flush()
    sys.stderr.flush()
    report["ended"] = time.time()  # (which rank failed first: the cause)
    resultfile.write_json_atomic(f"{spec.out}/.shoal-ranks/{rank}.json", report)
    return 0 if report["status"] == TaskStatus.DONE else 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # its report is written: skip the interpreter's teardown, where the threads of a process
    # group a task did not destroy end in "terminate called without an active exception"
    os._exit(code)
