"""Export to MLflow: an experiment named after shoal's, a parent run per step, a child run
per task (``pip install 'shoal[mlflow]'``: mlflow-skinny).

``DEST`` is a tracking URI (``http://host:5000``, ``sqlite:///mlflow.db``, ``databricks``)
or a folder: an MLflow file store (``mlflow ui --backend-store-uri DEST`` shows it). MLflow 3
keeps its file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; a folder given
here is what the user asked for, so shoal sets it for this export.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.results.history import points

BATCH = 900  # (MLflow takes at most 1,000 metrics in one log_batch)


def _uri(dest: str) -> str:
    if "://" in dest or dest in ("databricks",) or dest.startswith("sqlite:"):
        return dest
    path = Path(dest).expanduser().resolve()
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return path.as_uri()


class MlflowWriter:
    def __init__(self, dest: str, experiment: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ShoalError("--to mlflow needs MLflow: pip install 'shoal[mlflow]' "
                             "(mlflow-skinny)") from None
        from mlflow.exceptions import MlflowException

        self._error = MlflowException
        try:
            self.client = MlflowClient(tracking_uri=_uri(dest))
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (found.experiment_id if found is not None else
                                  self.client.create_experiment(experiment))
        except MlflowException as exc:
            raise ShoalError(f"--to mlflow {dest}: {exc.message}") from None

    def step(self, name: str, dims: list[str], metrics: list[str], old: Any) -> Any:
        if isinstance(old, str):
            try:
                run = self.client.get_run(old)
                if run.info.lifecycle_stage == "active":
                    return old
            except self._error:
                pass
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"shoal.step": name,
                                           "shoal.dims": ",".join(dims)})
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def task(self, row: Any, parent: Any, old: Any) -> Any:
        from mlflow.entities import Metric, Param, RunTag

        if isinstance(old, str):
            with contextlib.suppress(self._error):  # (the task ran again: replaced)
                self.client.delete_run(old)
        start = int((row.started or time.time()) * 1000)
        end = int((row.ended or row.started or time.time()) * 1000)
        tags = {"mlflow.parentRunId": parent, "shoal.step": row.step, "shoal.key": row.key,
                "shoal.status": row.status, "shoal.folder": row.folder}
        if row.duration is not None:
            tags["shoal.duration_s"] = f"{row.duration:.3f}"
        if row.attempts is not None:
            tags["shoal.attempts"] = str(row.attempts)
        run = self.client.create_run(self.experiment_id, start_time=start, tags=tags,
                                     run_name=row.label)
        rid = run.info.run_id
        series = points(row.history) if row.history is not None else {}
        # (final metrics at the history's last step: MLflow's latest value)
        last = max((x for pts in series.values() for x, _ in pts), default=0)
        metrics = [Metric(k, v, end, last) for k, v in row.metrics.items()
                   if math.isfinite(v)]
        metrics += [Metric(name, v, end, x) for name, pts in series.items() for x, v in pts]
        params = [Param(k, str(v)) for k, v in row.params.items()]
        for k in range(0, max(len(metrics), 1), BATCH):
            self.client.log_batch(rid, metrics=metrics[k:k + BATCH],
                                  params=params if k == 0 else [],
                                  tags=[RunTag("shoal.x", row.x)] if k == 0 and row.x else [])
        self.client.set_terminated(rid, "FINISHED" if row.status == "done" else "FAILED",
                                   end_time=end)
        return rid

    def close(self) -> None:
        pass
