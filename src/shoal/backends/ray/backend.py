"""RayBackend: the controller's tasks on an existing Ray cluster (``--backend ray``).

Each slot's worth of specs (a task, a bundle, a pack) is one Ray task that calls the one
worker entry, :func:`shoal.worker.execute.execute`, on the node Ray picks. Ray reuses its
worker processes, and each keeps the experiments it loaded: the experiment and torch are
imported once per worker process, not per task. Resources map to Ray's: ``cpus`` ×
``procs`` → ``num_cpus``, ``gpus`` (fractions too) → ``num_gpus`` (Ray sets
``CUDA_VISIBLE_DEVICES``), ``mem`` → ``memory``. Ray places the tasks: the controller hands
it every ready task.

The run root must be on storage every node sees: the workers write the tasks' result files
there and the controller reads them (:func:`probe`, at start). A worker process or a node
that dies mid-task loses that attempt: the task goes out again without using a retry. A stop
reaches running tasks through a file in the run root that ``ctx.should_stop()`` watches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from shoal.backends.base import Backend
from shoal.backends.ray.options import RayOptions
from shoal.errors import ShoalError
from shoal.state import resultfile
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import task as W
from shoal.worker.taskspec import TaskSpec

_loaded: dict[tuple[str, str], Any] = {}  # in a Ray worker: (target, config) -> experiment


def run_specs(specs: list[TaskSpec]) -> list[Outcome]:
    """What one Ray task runs: ``specs`` through the one worker entry, in this (reused)
    worker process, which keeps the experiment loaded for the next task."""
    import json

    from shoal.spec.loader import load_experiment
    from shoal.worker.execute import execute

    first = specs[0]
    key = (first.target, json.dumps(first.config, sort_keys=True))

    def experiment() -> Any:
        exp = _loaded.get(key)
        if exp is None:
            exp = _loaded[key] = load_experiment(first.target, first.config,
                                                 strict_config=False)
        return exp

    os.chdir(first.cwd)
    W.watch_stop_file(first.stop_file)
    try:
        return list(execute(specs, experiment, resume=True))
    finally:
        W.watch_stop_file(None)


def write_probe(path: str, token: str) -> str:
    """(On a Ray worker) write the storage probe; returns the node's name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(token)
    return os.uname().nodename


def connect(address: str | None) -> Any:
    """Join the Ray cluster at ``address`` (default: ``$RAY_ADDRESS``)."""
    try:
        import ray
    except ImportError:
        raise ShoalError("--backend ray needs Ray: pip install 'shoal[ray]' (or ray)") from None
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ShoalError(
            "--backend ray: name the cluster with --address HOST:PORT or $RAY_ADDRESS "
            "(start one with `ray start --head`, or point at your KubeRay head service)")
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ShoalError(f"--backend ray: cannot reach the Ray cluster at {address}: "
                             f"{exc}") from None
    return ray


@dataclass(eq=False)
class _Flight:
    specs: list[TaskSpec]
    started: float


@dataclass(eq=False)
class RayBackend(Backend):
    """Runs task specs as Ray tasks on an existing cluster."""

    root: Path
    options: RayOptions = field(default_factory=RayOptions)
    run_id: str = ""
    grows: bool = True  # the controller takes more tasks as the cluster grows
    name: ClassVar[str] = "ray"
    assigns_devices: ClassVar[bool] = False  # Ray sets CUDA_VISIBLE_DEVICES itself
    stages_on_node: ClassVar[bool] = True  # stage= archives unpack in the node's scratch
    flights: dict[Any, _Flight] = field(default_factory=dict)  # ObjectRef -> its specs
    _ray: Any = None
    _remote: Any = None

    def __post_init__(self) -> None:
        self._ray = connect(self.options.address)
        self._remote = self._ray.remote(max_retries=0)(run_specs)
        self.stop_file = str(self.root / ".shoal" / f"stop-{self.run_id or os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.stop_file)
        probe(self._ray, self.root)

    def capacity(self) -> tuple[int, list[str], int | None]:
        """The cluster's CPUs, GPUs (as names) and memory (MiB) now, or what the profile
        says an autoscaling cluster may grow to where that is more: what the controller
        hands out, so that short tasks go in bundles and Ray's queue stays short (but
        holds what an autoscaler must see)."""
        res = self._ray.cluster_resources()
        mem = res.get("memory")
        cpus = max(1, int(res.get("CPU", 1)), self.options.cpus or 0)
        gpus = max(int(res.get("GPU", 0)), self.options.gpus or 0)
        return cpus, [f"ray-gpu{k}" for k in range(gpus)], (
            int(mem // (1024 * 1024)) if mem and not self.options.cpus else None)

    def grown(self) -> tuple[int, list[str], int | None] | None:
        """The cluster's CPUs, GPUs and memory now (nodes join: an autoscaler, ``ray
        start``)."""
        if not self.grows:
            return None
        try:
            return self.capacity()
        except Exception:  # (Ray's own errors: the next look)
            return None

    # ---------------------------------------------------------------- running
    @property
    def running(self) -> int:
        return sum(len(f.specs) for f in self.flights.values())

    def start(self, specs: list[TaskSpec]) -> None:
        s = specs[0]
        opts: dict[str, Any] = {"num_cpus": max(1, s.cpus * s.procs), "num_gpus": s.gpus}
        if s.mem_mb:
            opts["memory"] = s.mem_mb * 1024 * 1024
        custom = self.options.resources_of(s.step)
        if custom:
            opts["resources"] = custom
        for spec in specs:
            spec.stop_file = self.stop_file
        ref = self._remote.options(**opts).remote(specs)
        self.flights[ref] = _Flight(list(specs), time.time())
        self.submissions += 1

    def poll(self, timeout: float) -> list[Outcome]:
        if not self.flights:
            time.sleep(min(timeout, 0.05))
            return []
        refs = list(self.flights)
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        out: list[Outcome] = []
        for ref in ready:
            flight = self.flights.pop(ref)
            try:
                out.extend(self._ray.get(ref))
            except self._ray.exceptions.RayError as exc:  # its worker or node died
                out.extend(self._lost(flight.specs, exc))
        return out

    def _lost(self, specs: list[TaskSpec], exc: BaseException) -> list[Outcome]:
        """The Ray task ended without its outcomes: what the result files say, else the
        attempt was lost (it goes out again, using no retry)."""
        why = type(exc).__name__
        out = []
        for spec in specs:
            doc = resultfile.read_result(Path(spec.out))
            if doc and doc.get("token") == spec.token:
                out.append(W.outcome(spec, TaskStatus.DONE, doc=doc))
                continue
            err = resultfile.read_error(Path(spec.out))
            if err and err.get("token") == spec.token:
                out.append(W.outcome(spec, err.get("status", TaskStatus.FAILED),
                                     error=err.get("error"), log_tail=err.get("log_tail"),
                                     doc=err))
                continue
            out.append(W.outcome(spec, TaskStatus.INTERRUPTED,
                                 error=f"lost: its Ray worker or node died ({why})"))
        return out

    # ---------------------------------------------------------------- stopping
    def running_specs(self) -> list[tuple[TaskSpec, float]]:
        return [(f.specs[0], f.started) for f in self.flights.values()]

    def kill(self, spec: TaskSpec, reason: str,
             status: str = TaskStatus.FAILED) -> list[Outcome]:
        for ref, flight in list(self.flights.items()):
            if flight.specs and flight.specs[0] is spec:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
                del self.flights[ref]
                return [W.write_failure(spec, status, reason, flight.started, in_log=True),
                        *[W.outcome(s, TaskStatus.UNSTARTED) for s in flight.specs[1:]]]
        return []

    def signal_stop(self, deadline: float) -> None:
        """Ask every running task to stop (``ctx.should_stop()``, through the stop file);
        what still runs at ``deadline`` is cancelled by :meth:`shutdown`."""
        with contextlib.suppress(OSError):
            Path(self.stop_file).write_text(str(deadline))

    def shutdown(self) -> None:
        for ref in list(self.flights):
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)
        self.flights.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.stop_file)
        with contextlib.suppress(Exception):
            self._ray.shutdown()


def probe(ray: Any, root: Path) -> None:
    """The run root must be shared: a file a Ray worker writes there must be visible here
    (Ray Tune asks the same of its storage path). One clear error otherwise."""
    from shoal.state.resultfile import unique_id

    token = unique_id()
    path = root / ".shoal" / f"ray-probe-{token}"
    remote = ray.remote(num_cpus=0, max_retries=0)(write_probe)
    try:
        node = ray.get(remote.remote(str(path), token), timeout=120)
    except Exception as exc:  # (Ray's own errors: a worker that cannot write there...)
        raise ShoalError(f"--backend ray: a Ray worker could not write into the run root "
                         f"{root}: {type(exc).__name__}: {exc}") from None
    try:
        seen = path.read_text() == token
    except OSError:
        seen = False
    with contextlib.suppress(OSError):
        path.unlink()
    if not seen:
        raise ShoalError(
            f"--backend ray: the run root {root} is not shared with the Ray workers (a file "
            f"written there on node {node} is not visible here); put it on storage every "
            "node mounts (NFS, a Kubernetes volume) and pass --root")
