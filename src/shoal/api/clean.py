"""``shoal clean``: what no task of the current grid and steps owns any more — task folders
left by a larger grid or a renamed step, outputs (``outputs=``) that tasks claimed before —
listed, and removed only when asked (with the root's lock, so never under a running
controller)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shoal.plan.build import expand
from shoal.plan.taskfiles import FileDigests, within
from shoal.spec.experiment import Experiment
from shoal.state.lock import RootLock
from shoal.state.store import STATE_DIR, Store, _transaction


@dataclass
class Orphans:
    """What ``shoal clean`` would remove."""

    folders: list[Path] = field(default_factory=list)  # task (or whole step) folders
    outputs: list[str] = field(default_factory=list)  # owned paths no task claims now
    records: list[tuple[str, str]] = field(default_factory=list)  # store rows of old tasks

    def __bool__(self) -> bool:
        return bool(self.folders or self.outputs or self.records)


def find(exp: Experiment) -> Orphans:
    """Task folders, claimed outputs and records that no current task owns."""
    root = exp.root
    base = str(exp.source.parent if exp.source else Path.cwd())
    with Store.open(root) as store:
        plans = expand(exp, FileDigests(store, base), root)
        keys = {name: set(sp.keys) for name, sp in plans.items()}
        claimed = {o for sp in plans.values() if sp.files and sp.files.outputs
                   for outs in sp.files.outputs for o in outs}
        found = Orphans()
        found.records = [(s, k) for s, k in store._query("SELECT step, key FROM tasks")
                         if k not in keys.get(s, ())]
        for name in {s for (s,) in store._query("SELECT DISTINCT step FROM tasks")}:
            for outs in store.column(name, "outputs").values():  # (path -> stamp)
                found.outputs.extend(o for o in outs if o not in claimed)
    protected = (base, str(root))
    found.outputs = sorted({o for o in found.outputs if os.path.lexists(o)
                            and not any(within(p, o) for p in protected)})
    if found.outputs and claimed:  # (an old path holding, or inside, a current output: kept)
        found.outputs = [o for o in found.outputs
                         if not any(within(c, o) or within(o, c) for c in claimed)]
    if root.is_dir():
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            sp = plans.get(entry.name)
            if sp is None:
                found.folders.append(Path(entry.path))
                continue
            for key in _task_dirs(entry.path, len(sp.dims)):
                if key not in keys[entry.name]:
                    found.folders.append(Path(entry.path) / key)
    return found


def _task_dirs(base: str, depth: int) -> list[str]:
    """Keys of the task folders ``depth`` levels below ``base`` (``dim=value`` folders)."""
    level = [""]
    for _ in range(depth):
        nxt: list[str] = []
        for prefix in level:
            try:
                entries = list(os.scandir(os.path.join(base, prefix) if prefix else base))
            except OSError:
                continue
            nxt.extend(f"{prefix}/{e.name}" if prefix else e.name for e in entries
                       if "=" in e.name and e.is_dir(follow_symlinks=False))
        level = nxt
    return sorted(k for k in level if k)


def remove(exp: Experiment, found: Orphans) -> None:
    """Delete what :func:`find` listed, holding the root's lock."""
    root = exp.root
    with RootLock(root).acquire("shoal clean --yes"):
        for folder in found.folders:
            shutil.rmtree(folder, ignore_errors=True)
        for path in found.outputs:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
        if found.records and (root / STATE_DIR).is_dir():
            with Store.open(root, create=True) as store:
                conn = store._writable()
                with _transaction(conn):
                    conn.executemany("DELETE FROM tasks WHERE step=? AND key=?", found.records)
                    conn.executemany("DELETE FROM attempts WHERE step=? AND key=?",
                                     found.records)
