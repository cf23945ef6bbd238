"""What a run is asked to do and what it did: options, per-step counts, the report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunOptions:
    """How to run (the CLI's flags)."""

    retries: int | None = None
    keep_going: bool = True
    grace_s: float = 30.0
    max_requeues: int = 10  # a task interrupted (not by the user) goes out again this often


@dataclass
class StepCounts:
    total: int = 0
    done: int = 0
    running: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0


@dataclass
class RunReport:
    """What a run did."""

    ran: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0
    adopted: int = 0
    not_started: int = 0  # to run, but never started (a stop, --fail-fast)
    elapsed: float = 0.0
    stopped: bool = False  # stopped launching early (Ctrl-C, SIGTERM or --fail-fast)
    user_stopped: bool = False  # by Ctrl-C / SIGTERM
    warnings: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (task, missing input)
    aborted: str | None = None  # why the run stopped by itself (its run root vanished...)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.skipped or self.interrupted or self.stopped
                    or self.blocked or self.aborted)


@dataclass
class DetachReport:
    """What ``--detach`` submitted."""

    tasks: dict[str, int] = field(default_factory=dict)  # step -> tasks submitted
    arrays: dict[str, list[str]] = field(default_factory=dict)  # step -> the engine's job ids
    submissions: int = 0  # calls to the engine (sbatch)
    elapsed: float = 0.0
