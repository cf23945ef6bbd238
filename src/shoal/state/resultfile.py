"""Per-task result files: the truth of a task's outcome, written by workers, read by the controller.

A task folder holds ``.shoal-result.json`` only once the task's function has returned and the
record is complete: it is written to a temporary file and renamed into place, so a reader never
sees a torn result (and a file torn by a power loss does not parse, so it reads as *not done*:
the task reruns, it is never taken as done). ``SHOAL_FSYNC=1`` adds an fsync before the rename.
A failed attempt writes ``.shoal-error.json`` instead. The task's log is ``.shoal.log``.

shoal's files sit directly in the task folder (no subfolder: one inode less per task on shared
filesystems) and start with a dot, so pyarrow/duckdb skip them when reading the folders as a
Hive-partitioned data set.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

#: This machine's name, recorded with every attempt (= socket.gethostname()).
HOST = os.uname().nodename

RESULT = ".shoal-result.json"
ERROR = ".shoal-error.json"
LOG = ".shoal.log"
CHECKPOINTS = ".shoal-checkpoints"
HISTORY = ".shoal-history.jsonl"  # ctx.log(epoch=..., loss=...): one JSON line per call
OWNER = ".shoal-owner"  # in a folder output: the dispatch token of the task that made it
FORMAT = 1
FSYNC = os.environ.get("SHOAL_FSYNC", "0") not in ("", "0", "false", "no")


def write_json_atomic(path: Path | str, data: Any, fsync: bool | None = None) -> None:
    """Write JSON to ``path`` atomically: a temp file in the same folder, then rename."""
    path = str(path)
    text = _ENCODER.encode(data).encode()
    tmp = f"{path}.{unique_id()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    except FileExistsError:  # (a leftover with the same id: practically never)
        tmp = f"{path}.{os.urandom(8).hex()}.tmp"
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            os.write(fd, text)
            if FSYNC if fsync is None else fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default)  # (one, not one
# per call as json.dumps makes for non-default options)


def read_json(path: Path | str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is absent or unreadable."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


METRICS = "metrics.json"  # a task's own metrics file (what a command writes to report them)


def read_metrics(path: Path | str) -> dict[str, Any] | None:
    """The metrics a task left in ``path`` (its ``metrics.json``): None when there is no
    such file; ValueError, naming the file and the fix, when it is not one JSON object (a
    task that meant to report metrics and did not must not count as done without them)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): write one JSON object of "
                         f"metrics, e.g. {{\"rmse\": 0.12}}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a JSON object of "
                         f"metrics: write e.g. {{\"rmse\": 0.12}}")
    return data


def read_result(task_dir: Path) -> dict[str, Any] | None:
    """The task's result record, or None when it has none (not done)."""
    return read_json(task_dir / RESULT)


def read_error(task_dir: Path) -> dict[str, Any] | None:
    """The task's last failure record, or None."""
    return read_json(task_dir / ERROR)


class _Ids:
    """Unique strings without a system call each: a random prefix per process (drawn again
    in a forked child) and a counter."""

    def __init__(self) -> None:
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(5).hex()
        self.count = itertools.count()

    def __call__(self) -> str:
        n = next(self.count)
        if n > 0xFFFFFF:  # used up: a new prefix
            self.reset()
            n = next(self.count)
        return f"{self.prefix}{n:06x}"


unique_id = _Ids()  # () -> 16 hex digits, unique across processes and hosts


def new_run_id() -> str:
    """A unique id for one successful attempt (downstream tasks record which they consumed)."""
    return unique_id()


def make_result(
    *,
    experiment: str,
    step: str,
    key: str,
    params: dict[str, Any],
    fingerprint: str,
    code: str,
    inputs: str | None,
    attempt: int,
    started: float,
    ended: float,
    host: str,
    metrics: dict[str, Any] | None,
    run_id: str | None = None,
    files: dict[str, str] | None = None,
    outputs: dict[str, list[Any] | None] | None = None,
) -> dict[str, Any]:
    """The JSON document of a task's result file (``files``: its input files and their
    digests; ``outputs``: the paths it owns, with [inode, mtime_ns] of each once it is done;
    both only where the step declares them)."""
    doc = {
        "format": FORMAT,
        "experiment": experiment,
        "step": step,
        "key": key,
        "params": params,
        "fingerprint": fingerprint,
        "code": code,
        "inputs": inputs,
        "run_id": run_id or new_run_id(),
        "attempt": attempt,
        "started": started,
        "ended": ended,
        "duration": ended - started,
        "host": host,
        "metrics": metrics or {},
    }
    if files is not None:
        doc["files"] = files
    if outputs is not None:
        doc["outputs"] = outputs
    return doc
