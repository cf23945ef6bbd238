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
import time
import traceback
from pathlib import Path
from typing import Any

from shoal.state.status import TaskStatus


def main(argv: list[str]) -> int:
    submission, offset = argv[0], int(argv[1])
    index = offset + int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    with open(os.path.join(submission, "bundles.pkl"), "rb") as fh:
        bundles = pickle.load(fh)
    from shoal.spec.loader import load_experiment
    from shoal.worker import command, deferred
    from shoal.worker import task as worker
    from shoal.worker.taskspec import TaskSpec

    specs = [TaskSpec.from_dict(d) for d in bundles[index]]
    worker.install_stop_handlers()
    first = specs[0]
    os.chdir(first.cwd)
    exp = None
    if specs and specs[0].packed:  # one call for the pack's members still to run
        from shoal.worker.packs import run_pack

        todo = []
        for s in specs:
            if _finished(s):
                continue
            why = deferred.resolve(s) if s.upstream is not None else None
            if why is not None:
                deferred.write_skipped(s, why)
            else:
                todo.append(s)
        for left in range(todo[0].retries if todo else 0, -1, -1):
            if not todo or worker.stop_requested():
                break
            print(f"shoal: pack of {len(todo)}: {todo[0].label} ...", flush=True)
            try:
                if exp is None:
                    exp = load_experiment(first.target, first.config, strict_config=False)
                outcomes = run_pack(todo, exp)
            except Exception as exc:  # shoal's own failure: every member fails, visibly
                traceback.print_exc()
                outcomes = [worker.write_failure(s, TaskStatus.FAILED,
                                                 f"{type(exc).__name__}: {exc}", time.time())
                            for s in todo]
            failed = {o["key"] for o in outcomes if o["status"] == TaskStatus.FAILED}
            todo = [s for s in todo if s.key in failed]  # retried (--detach) as a pack
            for s in todo:
                s.attempt += 1
            if left == 0:
                break
        return 0
    for spec in specs:
        if _finished(spec):  # Slurm requeued this element: keep what the first run did
            continue
        if worker.stop_requested():
            print(f"shoal: stop requested; {spec.label} not started", flush=True)
            break
        if spec.upstream is not None:  # submitted before its upstream tasks ran
            why = deferred.resolve(spec)
            if why is not None:
                deferred.write_skipped(spec, why)
                continue
        for left in range(spec.retries, -1, -1):  # retries here only without a controller
            print(f"shoal: {spec.label} (attempt {spec.attempt})", flush=True)
            try:
                if spec.command is not None:
                    o = command.run_command(spec)
                else:
                    if exp is None:
                        exp = load_experiment(first.target, first.config, strict_config=False)
                    o = worker.run_function(spec, exp)
            except Exception as exc:  # shoal's own failure: this task fails, the bundle goes on
                traceback.print_exc()
                o = worker.write_failure(spec, TaskStatus.FAILED, f"{type(exc).__name__}: {exc}",
                                         time.time())
            if o["status"] != TaskStatus.FAILED or left == 0 or worker.stop_requested():
                break
            spec.attempt += 1
    return 0


def _finished(spec: Any) -> bool:
    """Whether this dispatch of the task already ended (done, failed or skipped); an
    interrupted one resumes."""
    from shoal.state import resultfile

    doc = resultfile.read_result(Path(spec.out))
    if doc and doc.get("token") == spec.token:
        return True
    err = resultfile.read_error(Path(spec.out))
    return bool(err and err.get("token") == spec.token
                and err.get("status") != TaskStatus.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
