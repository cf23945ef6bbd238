"""A task's folder and the outputs it owns: made clean before an attempt (checkpoints and
the log stay), owned outputs removed before and stamped after, a missing one named."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from shoal.state import resultfile
from shoal.worker.taskspec import TaskSpec

#: kept across attempts of a task (a resumed task's history goes on; see context.history)
KEEP = (resultfile.CHECKPOINTS, resultfile.LOG, resultfile.HISTORY)


def prepare_folder(out: Path | str) -> bool:
    """A clean task folder: everything from an earlier attempt goes, except kept state
    (checkpoints and the log, which each attempt appends to). True when it was made now
    (so it is empty)."""
    try:
        os.mkdir(out)
        return True
    except FileNotFoundError:
        os.makedirs(out, exist_ok=True)
        return True
    except FileExistsError:
        pass
    for entry in os.scandir(out):
        if entry.name in KEEP:
            continue
        if "=" in entry.name and entry.is_dir():  # a nested task folder of the same step
            continue
        _remove(entry)
    return False


def prepare_task(spec: TaskSpec) -> bool:
    """:func:`prepare_folder`, then the task's owned outputs removed (a tool that finds its
    old state must not reuse it) and their parent folders made. True for a new folder."""
    new = prepare_folder(spec.out)
    if not new:
        _drop_foreign_history(f"{spec.out}/{resultfile.HISTORY}", spec.fingerprint)
    for path in spec.stale_outputs or ():  # (its old outputs: nobody else owns them now)
        remove_path(path)
    for path in spec.outputs or ():
        remove_path(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
    return new


def _drop_foreign_history(path: str, fingerprint: str) -> None:
    """A history is kept across attempts of one definition of the task; one that another
    fingerprint left is removed. A command's (no heading line) is kept only where the task
    resumes from its checkpoints (their own fingerprint check drops another definition's)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.readline()
    except OSError:
        return
    if f'"_fingerprint": "{fingerprint}"' in head:
        return
    resumes = os.path.isdir(os.path.join(os.path.dirname(path), resultfile.CHECKPOINTS))
    if '"_fingerprint"' in head or not resumes:
        with contextlib.suppress(OSError):
            os.unlink(path)


def remove_path(path: str) -> None:
    """Remove a file, a link or a folder tree; nothing if it is absent."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def output_stamps(spec: TaskSpec, done: bool) -> dict[str, list[Any] | None] | None:
    """The task's outputs as recorded with its result: path -> [inode, mtime_ns] of a file it
    left there; [inode, token] of a folder, the token also written into it (``.shoal-owner``:
    a folder removed and made again may get the same inode back, and a later step may add
    files to it); None (not done). A later change of that stamp — the path made again by
    another run root, a file rewritten — makes the task out of date."""
    if spec.outputs is None:
        return None
    out: dict[str, list[Any] | None] = {}
    for path in spec.outputs:
        try:
            st = os.lstat(path) if done else None
        except OSError:
            st = None
        if st is None:
            out[path] = None
        elif stat.S_ISDIR(st.st_mode):
            try:
                with open(f"{path}/{resultfile.OWNER}", "w") as fh:
                    fh.write(spec.token)
                out[path] = [st.st_ino, spec.token]
            except OSError:  # (a folder it may not write into: its inode alone)
                out[path] = [st.st_ino]
        else:
            out[path] = [st.st_ino, st.st_mtime_ns]
    return out


def missing_output(spec: TaskSpec) -> str | None:
    """Why a task that succeeded is still not done: an output it owns was not written."""
    for path in spec.outputs or ():
        if not os.path.lexists(path):
            return (f"the task ended without writing its declared output {path} "
                    "(outputs=); write it, or fix the template")
    return None


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
