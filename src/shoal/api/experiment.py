"""The public face of an experiment: :class:`shoal.Experiment` is the definition of
:mod:`shoal.spec.experiment` (pure data and its checks) with the verbs that use the
layers above it — plan, run, results, summary. Defined here, on top, so that the
definition imports nothing above it (no import cycle through the bottom layer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.spec import experiment as spec
from shoal.spec.grid import Value

if TYPE_CHECKING:
    from shoal.plan.build import Plan


class Experiment(spec.Experiment):
    __doc__ = spec.Experiment.__doc__

    # ----------------------------------------------------------------- planning
    def plan(
        self,
        only: Mapping[str, Sequence[Value]] | None = None,
        root: str | Path | None = None,
        missing_inputs: str = "error",
    ) -> Plan:
        """Expand the steps over the grid and decide what would run (reads the store).
        ``missing_inputs="skip"``: tasks lacking an input file are *blocked*, not an error."""
        from shoal.plan.build import build_plan  # (on use: importing an experiment stays light)

        return build_plan(self, root=Path(root) if root else self.root, only=only,
                          missing_inputs=missing_inputs)

    def run(self, **options: Any) -> Any:
        """Run what the plan says must run (see :func:`shoal.api.runner.run_experiment`)."""
        from shoal.api.runner import run_experiment

        return run_experiment(self, **options)

    def results(self, step: str | None = None) -> Any:
        """A pandas DataFrame, one row per task of ``step``: params, status, attempts,
        duration, started/ended, host, metrics and ``out`` (the task folder)."""
        from shoal.results.table import results

        return results(self, step)

    def summary(
        self, step: str | None = None, by: Sequence[str] | str = (),
        metric: Sequence[str] | str | None = None, level: float = 0.95,
    ) -> Any:
        """Summaries per group of ``by`` across the other dimensions (n, mean, std, sem,
        t-based CI, median, min, max, and the group's missing and failed counts)."""
        from shoal.results.table import summary

        by = [by] if isinstance(by, str) else list(by)
        metrics = [metric] if isinstance(metric, str) else metric
        return summary(self, step, by=by, metrics=metrics, level=level)

    def history(self, step: str | None = None) -> Any:
        """The histories of ``step``'s done tasks (``ctx.log(epoch=..., loss=...)``) as one
        long DataFrame: the task's dimensions, the x column (``frame.attrs["x"]``: epoch,
        step, ... or the record's number) and the values. Default: the first step that has
        them."""
        from shoal.errors import ShoalError
        from shoal.results.history import read_histories
        from shoal.results.table import results

        plan = self.plan(missing_inputs="skip")
        names = [step] if step else list(plan.steps)
        for name in names:
            if name not in plan.steps:
                raise ShoalError(f"unknown step '{name}' (steps: {', '.join(plan.steps)})")
            got = read_histories(results(self, name, plan=plan), plan.steps[name].dims)
            if len(got) or step:
                return got
        raise ShoalError(f"no step of '{self.name}' has histories yet: call ctx.log(epoch=..., "
                         "loss=...) in a step and run it")
