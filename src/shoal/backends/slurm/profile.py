"""Slurm profiles: a cluster's submission settings in one TOML file, kept out of the
experiment so the same definition runs on another cluster with another profile.

``shoal run EXP --backend slurm --profile NAME`` reads ``NAME`` as a path to a ``.toml``
file, else ``NAME.toml`` (or ``profiles/NAME.toml``) beside the experiment, else
``$XDG_CONFIG_HOME/shoal/profiles/NAME.toml`` (``~/.config`` by default)::

    partition = "gpu"            # defaults for every step
    account = "proj123"
    throttle = 100               # --array=...%100
    sbatch = ["--constraint=v100"]

    [steps.prep]                 # per-step overrides (merged over the defaults)
    partition = "cpu"
    sbatch = ["--nice=10"]       # added after the defaults' extras

Flags given on the command line override the profile's defaults. ``backend = "ray"`` at
the top makes ``--profile NAME`` alone mean ``--backend ray``; a ``[ray]`` table holds the
Ray backend's settings (:mod:`shoal.backends.ray.options`), so one file can serve both.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.spec.resources import parse_duration

DURATIONS = ("max_time", "signal_grace")  # "2h", "30s", "1-00:00:00", or seconds


@dataclass
class StepOptions:
    """Submission settings of one step (the profile's defaults merged with its overrides).
    The one list of them: profiles' keys, the merge and :class:`SlurmOptions` come from it."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    throttle: int | None = None  # %K: elements of one array running at once
    tasks_per_job: int | None = None  # bundle size; default from the step's time=
    bundle_minutes: float = 30.0  # aim of a bundle's length when tasks_per_job is unset
    extra: list[str] = field(default_factory=list)  # free sbatch options ("sbatch" in TOML)
    max_time: float | None = None  # longest job (s): longer tasks run as chained segments
    signal_grace: float = 90.0  # USR2 this many seconds before a job's time limit
    cpus: int | None = None  # ([steps.X] only) the step's cpus= on this cluster (shoal tune)


@dataclass
class SlurmOptions(StepOptions):
    """How to submit (flags or a profile): every step's defaults, the run's own settings,
    and per-step overrides (``steps``, a profile's ``[steps.NAME]`` tables)."""

    mem_retry_factor: float | None = None  # after OUT_OF_MEMORY, retry with mem × factor
    poll_s: float = 5.0
    max_poll_s: float = 30.0
    max_requeues: int = 10  # interrupted (preempted, requeued, time-limited) runs per task
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-step overrides
    _per_step: dict[str, StepOptions] = field(default_factory=dict, repr=False,
                                              compare=False)

    @classmethod
    def from_profile(cls, path: Path | None, **flags: Any) -> SlurmOptions:
        """A profile's settings, with the flags that are not None over its defaults (a
        flag's ``extra`` is appended to the profile's ``sbatch``)."""
        data = load(path) if path else {"defaults": {}, "steps": {}}
        base = dict(data["defaults"])
        if "sbatch" in base:
            base["extra"] = base.pop("sbatch")
        extra = [*base.pop("extra", []), *(flags.pop("extra", None) or [])]
        base.update({k: v for k, v in flags.items() if v is not None})
        return cls(**base, extra=extra, steps=data["steps"])

    def for_step(self, step: str) -> StepOptions:
        """The settings one step submits with (defaults, then its profile table)."""
        got = self._per_step.get(step)
        if got is None:
            base = StepOptions(**{f.name: getattr(self, f.name) for f in fields(StepOptions)})
            base.extra = list(base.extra)
            got = self._per_step[step] = step_options(base, self.steps.get(step, {}))
        return got


def _toml_name(name: str) -> str:
    return "sbatch" if name == "extra" else name


#: keys a profile may set per step (and as every step's default), and for the run only
STEP_KEYS = tuple(_toml_name(f.name) for f in fields(StepOptions))
RUN_KEYS = tuple(f.name for f in fields(SlurmOptions)
                 if f.name not in {g.name for g in fields(StepOptions)}
                 and f.name not in ("steps", "_per_step"))


def find(name: str, exp_dir: Path | None) -> Path:
    """The profile file ``name`` stands for (see the module docstring)."""
    given = Path(name).expanduser()
    if given.suffix == ".toml" or os.sep in name:
        if given.is_file():
            return given
        raise ShoalError(f"--profile {name}: no such file")
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidates = []
    if exp_dir is not None:
        candidates += [exp_dir / f"{name}.toml", exp_dir / "profiles" / f"{name}.toml"]
    candidates.append(config_home / "shoal" / "profiles" / f"{name}.toml")
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise ShoalError(f"--profile {name}: no profile found (looked for {looked})")


def target(name: str, exp_dir: Path | None) -> Path:
    """Where ``--write-profile NAME`` writes: the profile :func:`find` would read, or a new
    ``NAME.toml`` beside the experiment (a path as given)."""
    try:
        return find(name, exp_dir)
    except ShoalError:
        given = Path(name).expanduser()
        if given.suffix == ".toml" or os.sep in name:
            return given
        return (exp_dir or Path.cwd()) / f"{name}.toml"


def read(path: Path) -> dict[str, Any]:
    """The profile file's TOML, unchecked (one error naming the file if it cannot be read)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise ShoalError(f"profile {path}: {exc}") from None


def load(path: Path) -> dict[str, Any]:
    """Read and check a profile: ``{"defaults": {...}, "steps": {step: {...}}}``."""
    data = read(path)
    steps = data.pop("steps", {})
    data.pop("ray", None)  # (--backend ray's table: shoal.backends.ray.options)
    backend = data.pop("backend", "slurm")
    if backend not in ("slurm", "ray"):
        raise ShoalError(f"profile {path}: backend = {backend!r}: give \"slurm\" or \"ray\"")
    _check(path, "", data, STEP_KEYS + RUN_KEYS)
    if not isinstance(steps, dict):
        raise ShoalError(f"profile {path}: [steps] must be a table of step tables")
    for step, table in steps.items():
        if not isinstance(table, dict):
            raise ShoalError(f"profile {path}: steps.{step} must be a table")
        _check(path, f"steps.{step}.", table, STEP_KEYS)
    return {"defaults": data, "steps": steps, "backend": backend}


def _check(path: Path, where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise ShoalError(
                f"profile {path}: unknown key '{where}{key}' (known: {', '.join(allowed)})"
            )
        if key == "sbatch":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ShoalError(f"profile {path}: '{where}sbatch' must be a list of strings, "
                                 'e.g. sbatch = ["--constraint=v100"]')
        elif key in DURATIONS:
            try:
                table[key] = parse_duration("(profile)", f"{where}{key}", value)
            except ShoalError as exc:
                raise ShoalError(f"profile {path}: {exc}") from None
        elif key == "cpus" and not where:
            raise ShoalError(f"profile {path}: 'cpus' sets one step's threads on this cluster: "
                             "put it in a [steps.NAME] table")
        elif key in ("throttle", "tasks_per_job", "max_requeues", "cpus"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ShoalError(f"profile {path}: '{where}{key}' must be a whole number")
        elif key in ("partition", "account", "qos"):
            if not isinstance(value, str):
                raise ShoalError(f"profile {path}: '{where}{key}' must be a string")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ShoalError(f"profile {path}: '{where}{key}' must be a number")


def step_options(base: StepOptions, overrides: dict[str, Any]) -> StepOptions:
    """``base`` with a profile table's step-level keys applied (sbatch extras appended)."""
    known = {f.name for f in fields(StepOptions)}
    changes = {k: v for k, v in overrides.items() if k in known}
    out = replace(base, **changes)
    if overrides.get("sbatch"):
        out.extra = [*base.extra, *overrides["sbatch"]]
    return out


def write_step_cpus(path: Path, step: str, cpus: int, why: str) -> None:
    """Set ``cpus`` in the profile's ``[steps.STEP]`` table (made if missing, the file
    too), keeping the rest of the file as it is; ``why`` goes in a comment."""
    lines = path.read_text().splitlines() if path.exists() else []
    head = f"[steps.{step}]"
    entry = f"cpus = {cpus}  # {why}"
    try:
        at = next(k for k, ln in enumerate(lines) if ln.strip() == head)
    except StopIteration:
        lines += ([""] if lines else []) + [head, entry]
    else:
        end = next((k for k in range(at + 1, len(lines)) if lines[k].lstrip().startswith("[")),
                   len(lines))
        old = [k for k in range(at + 1, end) if lines[k].split("=")[0].strip() == "cpus"]
        if old:
            lines[old[0]] = entry
        else:
            lines.insert(at + 1, entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    load(path)  # (what it wrote must read back as a profile)
