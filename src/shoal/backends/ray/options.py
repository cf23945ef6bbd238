"""A profile's ``[ray]`` table: which cluster, what it may grow to, and custom resources.

The same profile files as Slurm's (``--profile NAME``: ``NAME.toml`` beside the experiment,
``profiles/NAME.toml``, ``~/.config/shoal/profiles/NAME.toml`` or a path)::

    backend = "ray"                  # --profile NAME then means --backend ray
    [ray]
    address = "ray://head-svc:10001" # else --address, else $RAY_ADDRESS
    cpus = 512                       # an autoscaling cluster: what it may grow to (the
    gpus = 32                        #   controller keeps that much queued in Ray, so the
                                     #   autoscaler sees the demand); default: what it has
    resources = { spot = 0.01 }      # custom Ray resources every task asks for
    [ray.steps.train]
    resources = { A100 = 1 }         # ... and one step's (merged over the defaults)

``--address`` on the command line wins over the profile, the profile over ``$RAY_ADDRESS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError

KEYS = ("address", "cpus", "gpus", "resources", "steps")


@dataclass
class RayOptions:
    """How to run on Ray (a profile's ``[ray]`` table and the flags)."""

    address: str | None = None
    cpus: int | None = None  # what an autoscaling cluster may grow to (None: what it has)
    gpus: int | None = None
    resources: dict[str, float] = field(default_factory=dict)  # every task's custom ones
    steps: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> its own

    @classmethod
    def from_profile(cls, path: Path | None, address: str | None = None) -> RayOptions:
        """A profile's ``[ray]`` table (none: the defaults), ``address`` over its own."""
        opts = cls(**load(path)) if path else cls()
        opts.address = address or opts.address or os.environ.get("RAY_ADDRESS") or None
        return opts

    def resources_of(self, step: str) -> dict[str, float]:
        """The custom Ray resources one task of ``step`` asks for."""
        own = self.steps.get(step)
        return {**self.resources, **own} if own else self.resources


def load(path: Path) -> dict[str, Any]:
    """The ``[ray]`` table of the profile at ``path``, checked (every error names the key
    and the file)."""
    from shoal.backends.slurm.profile import read

    table = read(path).get("ray", {})
    if not isinstance(table, dict):
        raise ShoalError(f"profile {path}: 'ray' must be a table ([ray])")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ShoalError(f"profile {path}: unknown key 'ray.{key}' (known: "
                             f"{', '.join(KEYS)})")
        if key == "address":
            if not isinstance(value, str) or not value:
                raise ShoalError(f"profile {path}: 'ray.address' must be a string, e.g. "
                                 '"ray://head-svc:10001" or "10.0.0.5:6379"')
        elif key in ("cpus", "gpus"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ShoalError(f"profile {path}: 'ray.{key}' must be a whole number (what "
                                 "the cluster may grow to)")
        elif key == "resources":
            value = _resources(path, "ray.resources", value)
        else:  # steps
            if not isinstance(value, dict):
                raise ShoalError(f"profile {path}: [ray.steps] must hold one table per step")
            steps = {}
            for step, sub in value.items():
                extra = set(sub) - {"resources"} if isinstance(sub, dict) else {"?"}
                if extra:
                    raise ShoalError(f"profile {path}: [ray.steps.{step}] may only set "
                                     "resources = { NAME = amount }")
                steps[step] = _resources(path, f"ray.steps.{step}.resources",
                                         sub.get("resources", {}))
            value = steps
        out[key] = value
    return out


def _resources(path: Path, where: str, value: Any) -> dict[str, float]:
    ok = isinstance(value, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        for v in value.values())
    if not ok:
        raise ShoalError(f"profile {path}: '{where}' must map resource names to amounts, "
                         "e.g. { A100 = 1 }")
    reserved = {"CPU", "GPU", "memory"} & set(value)
    if reserved:
        raise ShoalError(f"profile {path}: '{where}' names {sorted(reserved)[0]}: set it with "
                         "the step's cpus=, gpus= or mem= instead")
    return {str(k): float(v) for k, v in value.items()}
