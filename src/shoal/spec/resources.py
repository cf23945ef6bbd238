"""Resource requests of a step: cpus, gpus, memory, time — parsed and checked once."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from shoal.errors import SpecError

_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_MEM_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day)?s?\s*$", re.IGNORECASE)
_DUR_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400}


def _said(step: str, field: str, value: object) -> str:
    """How an error names the value: a step's keyword, or a command-line option (a field
    that starts with ``--``, given for the whole run)."""
    if field.startswith("--"):
        return f"{field} {value}"
    if step.startswith("("):  # (a profile's or partition's setting, not a step's)
        return f"{step[1:-1]} setting {field}={value!r}"
    return f"step '{step}': {field}={value!r}"


def _example(field: str, *values: str) -> str:
    if field.startswith("--"):
        return " or ".join(f"{field} {v}" for v in values)
    return " or ".join(f"{field}=\"{v}\"" for v in values)


def parse_mem(step: str, value: str | int | float | None, field: str = "mem") -> int | None:
    """Memory in MiB from ``"2G"``, ``"512M"``, ``"1.5GB"`` or a number of MiB (Slurm's unit).
    ``field``: the keyword or command-line option that gave it (for errors)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        mib = float(value)
    else:
        m = _MEM.match(str(value))
        if not m:
            raise SpecError(
                f"{_said(step, field, value)} is not a memory size; write e.g. "
                f"{_example(field, '2G', '512M')} (a bare number means MiB)"
            )
        mib = float(m.group(1)) * _MEM_UNITS[m.group(2).upper()]
    if mib <= 0:
        raise SpecError(f"{_said(step, field, value)} must be positive")
    return max(1, math.ceil(mib))


def parse_duration(step: str, field: str, value: str | int | float | None) -> float | None:
    """Seconds from ``"20m"``, ``"2h"``, ``"90s"``, ``"1d"`` or Slurm's formats (``"20"`` =
    20 minutes, ``"M:S"``, ``"H:M:S"``, ``"D-H"``, ``"D-H:M"``, ``"D-H:M:S"``).

    A Python number (``timeout=90``) means seconds.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value)
    else:
        text = str(value).strip()
        m = _DUR.match(text)
        if text.isdigit():  # Slurm: a bare number of minutes
            secs = float(text) * 60
        elif m:
            secs = float(m.group(1)) * _DUR_UNITS[(m.group(2) or "s").lower()]
        else:
            clock = _clock(text)
            if clock is None:
                raise SpecError(
                    f"{_said(step, field, value)} is not a duration; write e.g. "
                    f"{_example(field, '20m', '2h', '1d', 'HH:MM:SS')}"
                )
            secs = clock
    if secs <= 0:
        raise SpecError(f"{_said(step, field, value)} must be positive")
    return secs


def _clock(text: str) -> float | None:
    """Slurm's time formats: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    if "-" in text:
        d, _, rest = text.partition("-")
        parts = rest.split(":")
        if not d.isdigit() or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            return None
        nums = [int(p) for p in parts] + [0] * (3 - len(parts))  # after a day: H[:M[:S]]
        h, m, s = nums
        return float(int(d) * 86400 + h * 3600 + m * 60 + s)
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    nums = [int(p) for p in parts]
    if len(nums) == 1:  # a bare number of minutes is caught by _DUR as seconds; never here
        return float(nums[0] * 60)
    if len(nums) == 2:  # M:S
        return float(nums[0] * 60 + nums[1])
    h, m, s = nums
    return float(h * 3600 + m * 60 + s)


def slurm_time(seconds: float) -> str:
    """Seconds as Slurm's ``D-HH:MM:SS`` (rounded up to whole minutes as Slurm does)."""
    total = math.ceil(seconds / 60.0) * 60
    d, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


@dataclass(frozen=True)
class Resources:
    """What one task of a step occupies while it runs: ``cpus`` per process, ``gpus`` and
    ``mem`` per task, and ``procs`` processes (ranks)."""

    cpus: int = 1
    gpus: float = 0.0
    mem_mb: int | None = None
    time_s: float | None = None
    procs: int = 1

    @property
    def slot_cpus(self) -> int:
        """The cpus one task takes: each of its processes' cpus."""
        return self.cpus * self.procs

    @classmethod
    def parse(
        cls,
        step: str,
        cpus: int = 1,
        gpus: float = 0,
        mem: str | int | float | None = None,
        time: str | int | float | None = None,
        procs: int = 1,
    ) -> Resources:
        if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
            raise SpecError(f"step '{step}': cpus={cpus!r} must be a whole number >= 1")
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
            raise SpecError(f"step '{step}': gpus={gpus!r} must be a number >= 0")
        if gpus > 1 and not float(gpus).is_integer():
            raise SpecError(
                f"step '{step}': gpus={gpus!r}: more than one GPU must be a whole number; "
                "fractions (gpus=0.25) share one device"
            )
        if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
            raise SpecError(f"step '{step}': procs={procs!r} must be a whole number >= 1 (the "
                            "processes of one task: procs=2 runs two ranks)")
        return cls(
            cpus=cpus,
            gpus=float(gpus),
            mem_mb=parse_mem(step, mem),
            time_s=parse_duration(step, "time", time),
            procs=procs,
        )


#: Resource options that may name a dimension of the step (``cpus="{n_threads}"``).
FROM_PARAMS = ("cpus", "gpus", "mem", "procs")
_FIELD = re.compile(r"^\{([A-Za-z_]\w*)\}$")


def parse_resources(step: str, *, cpus: Any = 1, gpus: Any = 0, mem: Any = None,
                    time: Any = None, procs: Any = 1) -> tuple[Resources, dict[str, str]]:
    """A step's resources, and which of them come from a dimension's value (option ->
    dimension). Such an option is checked against every value when the step is validated
    (:func:`for_task`); until then it holds its default."""
    given = {"cpus": cpus, "gpus": gpus, "mem": mem, "procs": procs}
    dims: dict[str, str] = {}
    for name, value in given.items():
        if isinstance(value, str):
            m = _FIELD.match(value.strip())
            if m:
                dims[name] = m.group(1)
            elif "{" in value:
                raise SpecError(f"step '{step}': {name}={value!r}: name one dimension, as "
                                f"{name}=\"{{n_threads}}\" (its value is the {name})")
    plain = {k: v for k, v in given.items() if k not in dims}
    defaults = {"cpus": 1, "gpus": 0, "mem": None, "procs": 1}
    return Resources.parse(step, time=time, **{**defaults, **plain}), dims


def for_task(step: str, base: Resources, dims: dict[str, str],
             params: dict[str, Any]) -> Resources:
    """``base`` with the options that name a dimension set from the task's ``params``
    (one error naming the step, the option and the value when one does not fit)."""
    values: dict[str, Any] = {"cpus": base.cpus, "gpus": base.gpus, "mem": base.mem_mb,
                              "procs": base.procs}
    for name, dim in dims.items():
        v = params[dim]
        if name in ("cpus", "procs") and isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        values[name] = v
    try:
        return Resources.parse(step, time=base.time_s, **values)
    except SpecError:
        for name, dim in dims.items():  # which one: say its dimension and value
            try:
                Resources.parse(step, **{name: values[name]})
            except SpecError as exc:
                raise SpecError(f"{exc} (the value of dimension '{dim}' of a task: give "
                                f"'{dim}' values that fit {name}=)") from None
        raise
