"""The batch script of one job array: plain text, compared with golden files in tests."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from shoal.backends.slurm.profile import StepOptions
from shoal.spec.resources import slurm_time


def render(
    *,
    job_name: str,
    size: int,
    output: str,
    python: str,
    submission: str,
    offset: int,
    cpus: int,
    ntasks: int = 1,
    nodes: int = 1,
    mem_mb: int | None = None,
    time_s: float | None = None,
    gpus: float = 0.0,
    options: StepOptions | None = None,
    dependency: str | None = None,
    signal_grace: int | None = 90,
    setup: Sequence[str] = (),
    cwd: str | None = None,
) -> str:
    """The ``#SBATCH`` script running elements ``offset .. offset+size-1`` of a submission,
    with the step's submission ``options`` (partition, account, qos, throttle, extras)."""
    o = options or StepOptions()
    array = f"0-{size - 1}" + (f"%{o.throttle}" if o.throttle else "")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={output}",
        "#SBATCH --open-mode=append",  # a requeued element adds to its log
        f"#SBATCH --cpus-per-task={cpus}",
    ]
    if ntasks > 1:  # a multi-process task: its ranks, started by srun (shoal.worker.gang)
        lines.append(f"#SBATCH --ntasks={ntasks}")
    if nodes > 1:  # (its ranks spread evenly; --mem and --gres count per node)
        lines += [f"#SBATCH --nodes={nodes}", f"#SBATCH --ntasks-per-node={ntasks // nodes}"]
    if signal_grace:  # time to checkpoint: the element (exec'd below) gets USR2 first
        lines.append(f"#SBATCH --signal=B:USR2@{int(signal_grace)}")
    if mem_mb:
        lines.append(f"#SBATCH --mem={mem_mb}M")
    if time_s:
        lines.append(f"#SBATCH --time={slurm_time(time_s)}")
    if gpus > 0:
        lines.append(f"#SBATCH --gres=gpu:{max(1, int(gpus) // max(1, nodes))}")
    for flag, value in (("partition", o.partition), ("account", o.account), ("qos", o.qos),
                        ("dependency", dependency)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += [f"#SBATCH {x}" for x in o.extra]
    if setup:  # a function step's setup= lines (a command step runs its own), run where
        # its tasks run: the experiment's folder
        lines += ["", "set -e", *([f"cd {shlex.quote(cwd)}"] if cwd else []), *setup,
                  "set +e"]
    lines += [
        "",
        "# one array element runs one bundle of shoal tasks; each task writes its own result;",
        "# SIGUSR2/SIGTERM make ctx.should_stop() true (checkpoint, return shoal.Requeue)",
        f"exec {shlex.quote(python)} -m shoal.backends.slurm.element "
        f"{shlex.quote(submission)} {offset}",
        "",
    ]
    return "\n".join(lines)


def chunks(n: int, max_array_size: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of the arrays needed for ``n`` elements (indices 0..size-1 each)."""
    limit = max(1, max_array_size)  # indices 0 .. MaxArraySize-1
    return [(o, min(limit, n - o)) for o in range(0, n, limit)]
