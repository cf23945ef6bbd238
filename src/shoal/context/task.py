"""What user code sees while a task runs: ``ctx``.

``ctx.out`` (the task folder), ``ctx.params``, ``ctx.input(step)`` (the upstream task's
``.out``, ``.result`` and ``.params``), ``ctx.log``, ``ctx.threads``, ``ctx.device``,
``ctx.should_stop()``, ``ctx.attempt``, ``ctx.staged(name)``, ``ctx.checkpoint``,
``ctx.inputs``, ``ctx.outputs``, ``ctx.vars``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.context.checkpoint import Checkpoints
    from shoal.context.history import TaskLog


class Interrupted(Exception):
    """Raise from a task to say it stopped on request (after saving a checkpoint).

    The task is recorded *interrupted*, not failed, and does not use up its retries; the next
    ``shoal run`` resumes it.
    """


class _RequeueType:
    """Return ``shoal.Requeue`` from a task to be resumed later (same as raising Interrupted)."""

    _instance: _RequeueType | None = None

    def __new__(cls) -> _RequeueType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "shoal.Requeue"


Requeue = _RequeueType()


@dataclass(frozen=True)
class Upstream:
    """One upstream task as seen from a task that needs it."""

    step: str
    params: dict[str, Any]
    out: Path
    result: dict[str, Any]


class Files(Sequence[Path]):
    """A task's ``inputs=`` or ``outputs=``: every path in order (``for p in ctx.inputs``,
    ``ctx.inputs[0]``), and by name where they were given as a dict
    (``ctx.inputs["sample"]``: a Path; a list of Paths for a glob)."""

    def __init__(self, entries: Sequence[Sequence[Any]] | None = None) -> None:
        self._paths: list[Path] = []
        self._named: dict[str, Path | list[Path]] = {}
        for entry in entries or ():  # [name, paths, is a glob]
            name, paths = entry[0], entry[1]
            ps = [Path(p) for p in paths]
            self._paths.extend(ps)
            if name:
                many = entry[2] if len(entry) > 2 else len(ps) != 1
                self._named[name] = ps if many else ps[0]

    @overload
    def __getitem__(self, key: int) -> Path: ...
    @overload
    def __getitem__(self, key: slice) -> list[Path]: ...  # type: ignore[overload-overlap]
    @overload
    def __getitem__(self, key: str) -> Path | list[Path]: ...

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return self._named[key]
            except KeyError:
                raise KeyError(f"no file named {key!r} (named: "
                               f"{', '.join(self._named) or 'none'})") from None
        return self._paths[key]

    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> Iterator[Path]:
        return iter(self._paths)

    def names(self) -> list[str]:
        """The names given in the step's dict (empty for a list)."""
        return list(self._named)

    def __repr__(self) -> str:
        if self._named:
            return f"Files({self._named!r})"
        return f"Files({self._paths!r})"


@dataclass
class TaskContext:
    """The context passed as the first argument of every step function."""

    step: str
    params: dict[str, Any]
    out: Path
    threads: int = 1
    device: str = "cpu"
    attempt: int = 1
    root: Path | None = None
    upstream: Mapping[str, Upstream] = field(default_factory=dict)
    checkpoint: Checkpoints = field(default=None)  # type: ignore[assignment]
    #: the step's ``inputs=`` (files whose contents are in the fingerprint), ``outputs=``
    #: (paths outside ``out`` the task owns) and ``vars=``
    inputs: Files = field(default_factory=Files)
    outputs: Files = field(default_factory=Files)
    vars: Mapping[str, Any] = field(default_factory=dict)
    #: this process's rank among the task's ``procs=`` processes, and how many there are
    #: (0 and 1 for a single-process task); rank 0's return value is the task's result
    rank: int = 0
    world_size: int = 1
    _stop: Callable[[], bool] = field(default=lambda: False, repr=False)
    _staged: Mapping[str, Path] = field(default_factory=dict, repr=False)
    _log: TaskLog | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.checkpoint is None:
            from shoal.context.checkpoint import Checkpoints

            self.checkpoint = Checkpoints(self.out, "")

    def input(self, step: Any) -> Upstream:
        """The upstream task of ``step`` (a step object or its name) this task depends on."""
        name = getattr(step, "name", step)
        try:
            return self.upstream[name]
        except KeyError:
            known = ", ".join(self.upstream) or "none"
            raise ShoalError(
                f"step '{self.step}': ctx.input({name!r}) is not among its needs ({known}); "
                f"add it to needs="
            ) from None

    def staged(self, name: str) -> Path:
        """The folder an archive of ``stage=`` was unpacked into (``"data"`` for
        ``data.tar``): node-local on a cluster, unpacked once per node."""
        try:
            return self._staged[name]
        except KeyError:
            known = ", ".join(self._staged) or "none"
            raise ShoalError(
                f"step '{self.step}': ctx.staged({name!r}): no archive of that name is "
                f"staged (staged: {known}); add stage=[\"{name}.tar\"] to the step or "
                "the experiment"
            ) from None

    def should_stop(self) -> bool:
        """True once shoal asked the task to stop (Ctrl-C, time limit, preemption): save a
        checkpoint and return ``shoal.Requeue`` (or raise ``shoal.Interrupted``)."""
        return self._stop()

    @property
    def log(self) -> TaskLog:
        """``ctx.log.info(...)`` writes to the task's log file (``shoal logs``);
        ``ctx.log(epoch=3, loss=0.2)`` adds to its history (learning curves:
        :mod:`shoal.context.history`)."""
        if self._log is None:
            import logging  # (on first use: most tasks never log this way)

            from shoal.context.history import TaskLog

            logger = logging.getLogger(f"shoal.task.{self.step}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            if not logger.handlers:
                handler = logging.StreamHandler(_StderrProxy())
                handler.setFormatter(
                    logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
                )
                logger.addHandler(handler)
            self._log = TaskLog(logger, self.out, self.checkpoint.fingerprint, self.step)
        return self._log


class _StderrProxy:
    """Writes to whatever ``sys.stderr`` is now (the task log while a task runs)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
