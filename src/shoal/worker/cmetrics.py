"""Metrics of a command step, read as its ``metrics=`` says: a file (a JSON object, or a CSV
or TSV table whose last row is taken) or regular expressions over the task's log (this
attempt's part; the last match wins). Anything that cannot be read is a ValueError naming
the metric and the file or pattern: the task fails rather than count as done without it."""

from __future__ import annotations

import csv
import os
import re
from typing import Any

from shoal.state import resultfile
from shoal.worker.taskspec import TaskSpec

#: The most of a log that patterns are matched against (its end).
LOG_LIMIT = 32 << 20


def read(spec: TaskSpec) -> dict[str, Any]:
    """The metrics ``spec.metrics`` describes."""
    m = spec.metrics or {}
    if "file" in m:
        return _from_file(m["file"])
    return _from_log(spec, [(str(n), str(p)) for n, p in m.get("patterns", ())])


def _from_file(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise ValueError(f"its metrics file {path} (metrics=) was not written")
    if path.lower().endswith((".csv", ".tsv")):
        tab = path.lower().endswith(".tsv")
        with open(path, newline="", encoding="utf-8-sig") as fh:  # (a BOM is no name)
            rows = [r for r in csv.DictReader(fh, delimiter="\t" if tab else ",",
                                              restkey="\0extra")
                    if any((v or "").strip() for k, v in r.items() if k != "\0extra")]
        if not rows:
            raise ValueError(f"its metrics file {path} (metrics=) has no row of values")
        last = rows[-1]
        if "\0extra" in last:
            raise ValueError(f"its metrics file {path} (metrics=): the last row has more "
                             "cells than the header has names")
        return {k: number(v) for k, v in last.items() if k}
    data = resultfile.read_metrics(path)
    return data or {}


def _from_log(spec: TaskSpec, patterns: list[tuple[str, str]]) -> dict[str, Any]:
    text = attempt_log(spec)
    out: dict[str, Any] = {}
    for name, pat in patterns:
        matches = list(re.finditer(pat, text, re.MULTILINE))
        found = matches[-1] if matches else None  # (the last match wins)
        if found is None:
            raise ValueError(f"metric '{name}': the pattern {pat!r} (metrics=) matched "
                             "nothing in this attempt's log")
        raw = found.group(1) if found.re.groups else found.group(0)
        value = number(raw)
        if not isinstance(value, (int, float)):
            raise ValueError(f"metric '{name}': the pattern {pat!r} (metrics=) matched "
                             f"{raw!r}, which is not a number")
        out[name] = value
    return out


def attempt_log(spec: TaskSpec) -> str:
    """What this attempt of the task wrote to its log (after its header)."""
    path = f"{spec.out}/{resultfile.LOG}"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(max(0, size - LOG_LIMIT))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    header = f"=== {spec.label} attempt {spec.attempt} on "
    at = text.rfind(header)
    if at >= 0:
        nl = text.find("\n", at)
        text = text[nl + 1:] if nl >= 0 else ""
        logged = f"$ {spec.command}\n"  # the command line shoal logged after the header
        if text.startswith(logged):
            text = text[len(logged):]
    return text


_INT = re.compile(r"^[+-]?\d+$")


def number(text: str | None) -> Any:
    """A cell or a match as a number where it is one (``1``, ``-2.5e-3``, ``nan``); an
    empty cell as None; other text as it is."""
    if text is None:
        return None
    t = text.strip()
    if not t:
        return None
    if _INT.match(t):
        return int(t)
    try:
        return float(t)
    except ValueError:
        return t
