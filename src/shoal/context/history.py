"""``ctx.log``: the task's logger, and its history of values (learning curves).

``ctx.log(epoch=3, loss=0.21, val_nse=0.64)`` appends one JSON line to the task folder's
``.shoal-history.jsonl``; ``ctx.log.info("...")`` writes a line to the task log, as a
``logging.Logger`` does. One call is one small append (tens of microseconds): cheap enough
for every epoch. The history is kept across the attempts of a task, so a task resumed from
a checkpoint goes on where it was; a value logged again for the same ``epoch`` (or
``step``) replaces the earlier one when read. The first line names the task's fingerprint:
a history left by another definition of the task is dropped at the first call.
``shoal report`` plots the histories as learning curves, ``shoal.history()`` reads them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.state.resultfile import HISTORY


class TaskLog:
    """Call it with values (``ctx.log(epoch=1, loss=0.3)``) to add to the task's history;
    use it as a logger (``ctx.log.info(...)``, ``.warning``, ``.error``, ``.debug``,
    ``.exception``) to write to the task's log."""

    __slots__ = ("_fp", "_path", "_started", "_step", "logger")

    def __init__(self, logger: logging.Logger, out: Path, fingerprint: str, step: str) -> None:
        self.logger = logger
        self._path = os.path.join(out, HISTORY)
        self._fp = fingerprint
        self._step = step
        self._started = False

    def __call__(self, **values: Any) -> None:
        if not values:
            raise ShoalError(f"step '{self._step}': ctx.log() needs values, e.g. "
                             "ctx.log(epoch=3, loss=0.21)")
        row = {k: _scalar(self._step, k, v) for k, v in values.items()}
        if not self._started:
            self._start()
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, allow_nan=True) + "\n")

    def _start(self) -> None:
        """Drop a history another fingerprint wrote; head a new one with this one's."""
        self._started = True
        try:
            with open(self._path, encoding="utf-8") as fh:
                head = json.loads(fh.readline() or "{}")
            if head.get("_fingerprint") == self._fp:
                return
        except (OSError, ValueError):
            pass
        with open(self._path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"_fingerprint": self._fp}) + "\n")

    # the logger's face
    def info(self, msg: object, *args: Any, **kw: Any) -> None:
        self.logger.info(msg, *args, **kw)

    def warning(self, msg: object, *args: Any, **kw: Any) -> None:
        self.logger.warning(msg, *args, **kw)

    def error(self, msg: object, *args: Any, **kw: Any) -> None:
        self.logger.error(msg, *args, **kw)

    def debug(self, msg: object, *args: Any, **kw: Any) -> None:
        self.logger.debug(msg, *args, **kw)

    def exception(self, msg: object, *args: Any, **kw: Any) -> None:
        self.logger.exception(msg, *args, **kw)

    def __getattr__(self, name: str) -> Any:  # (the rest of logging.Logger: setLevel, ...)
        return getattr(self.logger, name)


def _scalar(step: str, key: str, value: Any) -> float | int | str | bool | None:
    """A number or a short text; numpy and torch scalars by ``.item()`` (no autograd
    warning, no device copy of more than one value)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            got = item()
        except (ValueError, RuntimeError):  # (an array of many values)
            got = None
        if isinstance(got, (bool, int, float)):
            return got
    raise ShoalError(f"step '{step}': ctx.log({key}=...) takes a number or a text, got "
                     f"{type(value).__name__}; log one value per name (e.g. "
                     f"{key}=float(x.mean()))")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
