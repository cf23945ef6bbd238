"""Per-task result files: the truth of a task's outcome, written by workers, read by the controller.

A task folder holds ``.shoal/result.json`` only once the task's function has returned and the
record is complete: it is written to a temporary file, fsynced and renamed into place, so a
reader never sees a torn result. A failed attempt writes ``.shoal/error.json`` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

META_DIR = ".shoal"
RESULT = "result.json"
ERROR = "error.json"
LOG = "task.log"
FORMAT = 1


def meta_dir(task_dir: Path) -> Path:
    """The folder inside a task folder where shoal keeps its own files."""
    return task_dir / META_DIR


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"), default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:  # make the rename durable too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is absent or unreadable."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def read_result(task_dir: Path) -> dict[str, Any] | None:
    """The task's result record, or None when it has none (not done)."""
    return read_json(meta_dir(task_dir) / RESULT)


def read_error(task_dir: Path) -> dict[str, Any] | None:
    """The task's last failure record, or None."""
    return read_json(meta_dir(task_dir) / ERROR)


def new_run_id() -> str:
    """A unique id for one successful attempt (downstream tasks record which they consumed)."""
    return os.urandom(8).hex()


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
) -> dict[str, Any]:
    """The JSON document of a task's result file."""
    return {
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
