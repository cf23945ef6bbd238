"""TaskSpec: everything needed to run one task anywhere, as plain picklable/JSON data.

The scheduler builds specs from the plan; backends carry them to workers (a pipe locally, a
file on Slurm); the worker runs them and writes the result file. No database access needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.state.status import task_label

#: Thread-pool sizes a task gets (= its cpus), so that tasks side by side never oversubscribe:
#: OpenMP, BLAS and numexpr, TensorFlow's intra-op pool, numba, BLIS, Rayon (polars).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS",
               "NUMBA_NUM_THREADS", "BLIS_NUM_THREADS", "RAYON_NUM_THREADS",
               "POLARS_MAX_THREADS")
#: TensorFlow's inter-op pool runs independent ops side by side, each with intra-op threads.
INTEROP_VAR = "TF_NUM_INTEROP_THREADS"
#: Every process of a run's tasks carries it (a local run's supervisor finds them by it).
RUN_MARK = "SHOAL_RUN_ID"


@dataclass
class TaskSpec:
    """One attempt of one task."""

    experiment: str
    target: str  # how to import the experiment: "path/to/experiment.py[:name]"
    config: dict[str, Any]
    step: str
    key: str
    params: dict[str, Any]
    fingerprint: str
    code: str
    inputs: str | None
    attempt: int
    out: str
    root: str
    cwd: str
    cpus: int = 1
    gpus: float = 0.0
    devices: list[str] | None = field(default_factory=list)  # None: left to the scheduler
    mem_mb: int | None = None
    time_s: float | None = None  # the step's expected run time (Slurm's --time)
    timeout_s: float | None = None
    command: str | None = None  # rendered shell command for command steps
    argv: list[str] | None = None  # the same, when it needs no shell
    needs: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> {params,out,result}
    gather: dict[str, list[dict[str, Any]]] | None = None  # step -> rows (params, metrics, out)
    token: str = ""  # this dispatch: echoed in the result/error file, so old files never count
    stage: list[str] = field(default_factory=list)  # archives to unpack before it runs
    stage_dir: str | None = None  # where (None: node-local scratch, see shoal.worker.staging)
    # submitted before its upstream tasks ran (--detach): read them first (shoal.worker.deferred)
    upstream: list[dict[str, Any]] | None = None
    allow_missing: bool = False  # a gather's: rows of failed upstream tasks may be missing
    retries: int = 0  # extra attempts the worker itself makes (--detach: no controller)
    packed: bool = False  # one member of a pack: the bundle's specs go to one call
    # around the code (shoal.spec.around): input files [[name, [paths]]] and their digests
    # (path -> digest, recorded in the result), owned outputs, vars, env, setup lines, how
    # a command's metrics are read ({"file": path} or {"patterns": [[name, regex]]})
    in_files: list[list[Any]] | None = None
    files: dict[str, str] | None = None
    outputs: list[str] | None = None
    out_names: list[str] | None = None
    stale_outputs: list[str] | None = None  # what it owned before outputs= changed
    vars: dict[str, Any] = field(default_factory=dict)
    user_env: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    cleanup: list[str] | None = None  # run after the command was killed (a container's rm)
    run_id: str = ""  # the run that dispatched it (RUN_MARK in its environment)
    # a multi-process task: its ranks (cpus= is per rank), the processes shoal starts (1 for
    # a command that starts its own ranks: torchrun), how long all may stay silent
    procs: int = 1
    starts: int = 1
    nodes: int = 1  # (Slurm: the nodes its ranks spread over)
    stop_file: str | None = None  # (Ray: a file whose presence asks the task to stop)
    hang_timeout_s: float | None = None

    @property
    def label(self) -> str:
        return task_label(self.step, self.key)

    @property
    def device(self) -> str:
        if self.devices is None:  # the cluster's scheduler set CUDA_VISIBLE_DEVICES
            return "cuda:0" if self.gpus > 0 else "cpu"
        return "cuda:0" if self.devices else "cpu"

    def env(self) -> dict[str, str]:
        """Environment variables the task runs with (threads and GPU visibility)."""
        env = dict.fromkeys(THREAD_VARS, str(self.cpus))
        env[INTEROP_VAR] = str(min(self.cpus, 2))
        env.update({
            "SHOAL_STEP": self.step,
            "SHOAL_TASK": self.key,
            "SHOAL_OUT": self.out,
            "SHOAL_ATTEMPT": str(self.attempt),
            "SHOAL_CHECKPOINTS": f"{self.out}/.shoal-checkpoints",
            "SHOAL_HISTORY": f"{self.out}/.shoal-history.jsonl",  # JSON lines: curves
        })
        if self.run_id:
            env[RUN_MARK] = self.run_id
        if self.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)
        if self.user_env:  # the step's env= (the user's word wins)
            env.update(self.user_env)
        return env

    def to_dict(self) -> dict[str, Any]:
        """Its fields (shallow: the values are plain data already)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(**data)


def gather_row(params: dict[str, Any], metrics: dict[str, Any], out: str,
               step: str | None) -> dict[str, Any]:
    """One row of a gather's ``runs``: the upstream task's params, its metrics (prefixed
    ``metric_`` where a name clashes), ``out``, and ``step`` when several steps are gathered."""
    row = dict(params)
    for mk, mv in metrics.items():
        row[f"metric_{mk}" if mk in row or mk == "out" else mk] = mv
    row["out"] = out
    if step is not None:
        row["step"] = step
    return row
