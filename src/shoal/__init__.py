"""shoal: run large grids of independent ML experiments, locally or on Slurm.

Define the grid and the steps once::

    import shoal

    exp = shoal.Experiment("streamflow", grid=shoal.Grid(site=SITES, seed=range(30)))

    @exp.step(per=["site", "seed"])
    def train(ctx, site, seed):
        ...
        return {"val_rmse": 0.31}

then ``shoal plan``, ``shoal run``, ``shoal status`` from the command line.
``import shoal`` stays light: torch, pandas and Slurm support load only when used
(``shoal.torch``, the stacking helpers for packs, is imported explicitly).
"""

from __future__ import annotations

from typing import Any

from shoal.api.experiment import Experiment
from shoal.context.task import Files, Interrupted, Requeue, TaskContext
from shoal.errors import ConfigError, ShoalError, SpecError
from shoal.spec.around import Container
from shoal.spec.codehash import hash_code
from shoal.spec.configuration import config
from shoal.spec.experiment import Step
from shoal.spec.grid import Grid, Zip, zip
from shoal.spec.loader import load
from shoal.spec.question import MetricInfo, Question

__version__ = "0.1.0"

__all__ = [
    "Checkpoints",
    "ConfigError",
    "Container",
    "Experiment",
    "Files",
    "Grid",
    "Interrupted",
    "MetricInfo",
    "PackContext",
    "Question",
    "Requeue",
    "ShoalError",
    "SpecError",
    "Step",
    "TaskContext",
    "Zip",
    "__version__",
    "config",
    "hash_code",
    "load",
    "zip",
]


def __getattr__(name: str) -> Any:
    """``shoal.Checkpoints`` and ``shoal.PackContext`` load on first use (start-up stays
    light for every process that imports an experiment)."""
    if name == "Checkpoints":
        from shoal.context.checkpoint import Checkpoints

        return Checkpoints
    if name == "PackContext":
        from shoal.worker.packs import PackContext

        return PackContext
    raise AttributeError(f"module 'shoal' has no attribute {name!r}")
