"""The list of a run root's Slurm array elements and the tasks each runs
(``.shoal/slurm/detached.json``), written before anything follows them: after each
``sbatch`` of an attached run, and for a ``--detach`` submission. A run started after a crash
(or to re-attach) adopts the elements Slurm still holds instead of submitting their tasks
again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def manifest_path(root: Path) -> Path:
    return root / ".shoal" / "slurm" / "detached.json"


def load(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads(manifest_path(root).read_text())
    except (FileNotFoundError, ValueError):
        return None


def write(root: Path, doc: dict[str, Any]) -> None:
    """Replace the manifest atomically (a temporary file, fsync, rename)."""
    path = manifest_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(doc))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def add(root: Path, elements: dict[str, list[list[Any]]]) -> None:
    """Add array elements (``"<job>_<index>" -> [[step, key, token, fingerprint], ...]``)."""
    doc = load(root) or {"submitted": time.time(), "elements": {}}
    doc.setdefault("elements", {}).update(elements)
    write(root, doc)
