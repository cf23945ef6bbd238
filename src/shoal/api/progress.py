"""Live progress: a rich table on a terminal, plain periodic lines elsewhere (CI, nohup, Slurm)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from shoal.schedule.controller import Controller


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def eta(ctl: Controller) -> float | None:
    """Seconds left at the rate tasks finished so far in this run (None before any finished)."""
    finished = ctl.report.done + ctl.report.failed
    left = sum(c.total - c.done - c.failed - c.skipped - c.interrupted for c in ctl.counts)
    elapsed = time.time() - ctl.started
    if finished == 0 or elapsed <= 0:
        return None
    return left / (finished / elapsed)


def step_lines(ctl: Controller) -> list[tuple[str, Any]]:
    rows = []
    for sp, c in zip(ctl.sps, ctl.counts):
        if c.total:
            rows.append((sp.name, c))
    return rows


class PlainProgress:
    """Prints every ``interval`` seconds: one line per active step and an overall line."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 10.0) -> None:
        self.stream = stream
        self.interval = interval
        self.last = 0.0
        self.last_text = ""

    def __call__(self, ctl: Controller) -> None:
        now = time.time()
        due = now - self.last >= self.interval
        if not due and ctl.running:
            return
        lines = []
        for name, c in step_lines(ctl):
            extra = "".join(
                f", {n} {label}" for n, label in
                ((c.failed, "failed"), (c.skipped, "skipped"), (c.interrupted, "interrupted"))
                if n
            )
            lines.append(f"  {name}: {c.done}/{c.total} done, {c.running} running{extra}")
        left = eta(ctl)
        head = f"[{_hms(now - ctl.started)}] {ctl.report.done} done this run"
        head += f", ETA {_hms(left)}" if left is not None and ctl.running else ""
        body = "\n".join(lines)
        if due or body != self.last_text:  # every interval (a heartbeat with the elapsed
            # time, also while long tasks move no count), and at once when the run ends
            print("\n".join([head, *lines]), file=self.stream, flush=True)
            self.last, self.last_text = now, body

    def close(self) -> None:
        pass


class RichProgress:
    """A live table, refreshed a few times a second."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def __call__(self, ctl: Controller) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for col in ("step", "", "done", "running", "failed", "skipped"):
            table.add_column(col, justify="left" if col in ("step", "") else "right")
        for name, c in step_lines(ctl):
            bar = ProgressBar(total=max(1, c.total), completed=c.done, width=30)
            table.add_row(name, bar, f"{c.done}/{c.total}", str(c.running),
                          f"[red]{c.failed}[/red]" if c.failed else "0", str(c.skipped))
        left = eta(ctl)
        elapsed = _hms(time.time() - ctl.started)
        table.caption = f"elapsed {elapsed}" + (f", ETA {_hms(left)}" if left else "")
        if ctl.stopping:
            table.caption += " — stopping (Ctrl-C again to kill)"
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def make_progress(mode: str, interval: float) -> Any:
    """``auto`` (rich on a terminal), ``rich``, ``plain`` or ``none``."""
    if mode == "none":
        return None
    if mode == "rich" or (mode == "auto" and sys.stderr.isatty()):
        try:
            return RichProgress()
        except ImportError:
            pass
    return PlainProgress(interval=interval)
