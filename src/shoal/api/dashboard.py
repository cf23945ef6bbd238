"""What ``shoal serve`` shows, read-only: per-step counts in the task states with an ETA,
the running tasks with their elapsed time, the failures with their log tails, the headline
(the answer to ``exp.question``) and a detached Slurm submission's jobs.

It never takes the controller's lock and never writes: the plan is built read-only, the
store is read (SQLite WAL: readers do not block the controller), Slurm is asked with one
``squeue`` for a detached submission. Expensive parts are cached: the plan for a few
seconds, the headline until the store changes (and at most every 30 s).
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.plan.build import build_plan
from shoal.results.states import counts, task_states
from shoal.state.lock import RootLock
from shoal.state.resultfile import LOG
from shoal.state.store import Store

PLAN_EVERY = 2.0  # seconds a plan is reused
HEADLINE_EVERY = 30.0
RATE_WINDOW = 600.0  # seconds of progress the ETA is measured over


class Dashboard:
    def __init__(self, exp: Any) -> None:
        self.exp = exp
        self.root = Path(exp.root)
        self._plan: Any = None
        self._plan_at = 0.0
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._headline: dict[str, Any] | None = None
        self._headline_at = 0.0
        self._headline_key: Any = None

    # ------------------------------------------------------------------ the plan
    def plan(self) -> Any:
        now = time.time()
        if self._plan is None or now - self._plan_at > PLAN_EVERY:
            self._plan = build_plan(self.exp, self.root, missing_inputs="skip")
            self._plan_at = now
        return self._plan

    # ------------------------------------------------------------------ the state
    def state(self) -> dict[str, Any]:
        """Everything the page shows, as one JSON-able document."""
        plan = self.plan()
        live = RootLock(self.root).held_by_other()
        now = time.time()
        steps: dict[str, Any] = {}
        running: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        if (self.root / ".shoal" / "state.db").exists():
            with Store.open(self.root) as store:
                for name, sp in plan.steps.items():
                    c = counts(task_states(sp, store.statuses(name), live))
                    steps[name] = {"total": len(sp.state), **c}
                if live:
                    for r in store.records(status="running"):
                        running.append({"task": f"{r.step}/{r.key}", "label": r.label,
                                        "elapsed_s": now - r.started if r.started else None,
                                        "host": r.host, "attempt": r.attempts})
                for r in store.records(status="failed"):
                    failures.append({"task": f"{r.step}/{r.key}", "label": r.label,
                                     "error": r.error, "log_tail": r.log_tail})
        else:
            for name, sp in plan.steps.items():
                steps[name] = {"total": len(sp.state), **counts(task_states(sp, {}, live))}
        self._sample(now, steps)
        for name, s in steps.items():
            s["eta_s"] = self._eta(name, s, now) if live else None
        running.sort(key=lambda r: -(r["elapsed_s"] or 0))
        return {
            "experiment": self.exp.name, "root": str(self.root),
            "controller": "running" if live else "none", "time": now,
            "total": sum(s["total"] for s in steps.values()),
            "done": sum(s["done"] for s in steps.values()),
            "steps": steps, "running": running[:50], "n_running": len(running),
            "failures": failures[:30], "n_failures": len(failures),
            "detached": self._detached(), "headline": self._answer(),
        }

    def _sample(self, now: float, steps: dict[str, Any]) -> None:
        self._samples.append((now, {n: s["done"] + s["failed"] for n, s in steps.items()}))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()

    def _eta(self, name: str, s: dict[str, Any], now: float) -> float | None:
        """Seconds until the step's tasks are through, at the rate they ended over the
        last minutes this dashboard watched (None: no rate yet)."""
        first_t, first = self._samples[0]
        moved = s["done"] + s["failed"] - first.get(name, 0)
        left = s["total"] - s["done"] - s["failed"] - s["blocked"] - s["skipped"]
        if left <= 0:
            return 0.0
        if moved <= 0 or now - first_t < 1.0:
            return None
        return left / (moved / (now - first_t))

    def _detached(self) -> dict[str, Any] | None:
        """A detached Slurm submission's live jobs per step (read-only: no ingest)."""
        from shoal.backends.slurm import detach

        if not detach.manifest_path(self.root).exists():
            return None
        try:
            states = detach.snapshot(self.root)
            tasks, alive = detach.live(self.root, states)
        except Exception as exc:  # (Slurm unreachable, a file being written: next poll)
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"elements": len(alive), "steps": detach.summary(alive, tasks)}

    def _answer(self) -> dict[str, Any] | None:
        """The headline (sentences, figure, table) while the store is unchanged."""
        if self.exp.headline is None:
            return None
        db = self.root / ".shoal" / "state.db"
        try:
            key = (os.stat(db).st_mtime_ns, os.stat(f"{db}-wal").st_mtime_ns
                   if os.path.exists(f"{db}-wal") else 0)
        except OSError:
            return None
        now = time.time()
        if key == self._headline_key or (self._headline is not None
                                         and now - self._headline_at < HEADLINE_EVERY):
            return self._headline
        from shoal.results import figures, page
        from shoal.results.compare import headline

        try:
            a = headline(self.exp, self.plan())
        except Exception as exc:  # (a user's question that cannot be answered yet, or
            # shoal's own failure: said on the page, tried again when the store changes)
            text = str(exc) if isinstance(exc, ShoalError) else f"{type(exc).__name__}: {exc}"
            self._headline = {"error": text}
        else:
            assert a is not None
            has = int(a.table["n"].sum()) > 0
            self._headline = {
                "sentences": a.sentences, "units": a.units, "method": a.method,
                "figure": figures.headline(a) if has else "",
                "table": page.table(a.table) if has else ""}
        self._headline_key, self._headline_at = key, now
        return self._headline

    # ------------------------------------------------------------------ logs
    def log_path(self, task: str) -> Path:
        """The log of the task ``STEP/KEY`` (a task of the plan, never a path given from
        outside); ShoalError for an unknown task, PermissionError for a log that leads
        outside the run root (a symlink)."""
        plan = self.plan()
        step, _, key = task.partition("/")
        sp = plan.steps.get(step)
        if sp is None or key not in set(sp.keys):
            raise ShoalError(f"no task {task!r}")
        folder = self.root / step / key if key else self.root / step
        path = folder / LOG
        real = os.path.realpath(path)
        top = os.path.realpath(self.root)
        if not real.startswith(top + os.sep):
            raise PermissionError(f"the log of {task} leads outside the run root")
        return Path(real)
