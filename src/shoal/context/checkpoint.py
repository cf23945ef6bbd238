"""``ctx.checkpoint``: save a task's state so that a stopped, preempted or time-limited task
resumes where it was instead of starting over.

Checkpoints live in ``<task folder>/.shoal-checkpoints/``, which survives the cleaning of
the folder between attempts of the same task, is dropped when the task's fingerprint
changes (new code, version or parameters: an old state would not fit), and is removed when
the task succeeds (a rerun — e.g. after an upstream task changed — starts from scratch).
Each save is atomic (temp file, fsync, rename, fsync of the folder): a reader never sees
half a checkpoint.
Only the last ``keep`` (2) are kept::

    state = ctx.checkpoint.load() or {"epoch": 0, "w": init()}
    for epoch in range(state["epoch"], 100):
        ...
        ctx.checkpoint.save({"epoch": epoch + 1, "w": w})
        if ctx.should_stop():
            return shoal.Requeue

With torch (shoal never imports it)::

    ctx.checkpoint.save(writer=lambda path: torch.save(state, path))
    state = ctx.checkpoint.load(reader=torch.load)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.state.resultfile import CHECKPOINTS, write_json_atomic

META = "meta.json"
_PREFIX = "ckpt-"


class Checkpoints:
    """The checkpoints of one task (``ctx.checkpoint``)."""

    def __init__(self, out: Path | str, fingerprint: str, keep: int = 2) -> None:
        self.folder = Path(out) / CHECKPOINTS
        self.fingerprint = fingerprint
        self.keep = keep
        self._checked = False

    # ------------------------------------------------------------------ reading
    def _check(self) -> None:
        """Drop the checkpoints of another fingerprint (once per attempt). A folder without
        its fingerprint (a command step wrote it, and was killed before it ended) is taken
        as this one's."""
        if self._checked:
            return
        self._checked = True
        try:
            fp = json.loads((self.folder / META).read_text()).get("fingerprint")
        except FileNotFoundError:
            if self.folder.is_dir():
                self.claim()
            return
        except (ValueError, OSError, AttributeError):
            return  # unreadable: never delete on a doubt (a transient error, a torn file)
        if isinstance(fp, str) and fp != self.fingerprint:
            shutil.rmtree(self.folder, ignore_errors=True)

    def claim(self) -> None:
        """Mark the folder (if any) as this fingerprint's checkpoints."""
        if self.folder.is_dir():
            write_json_atomic(self.folder / META, {"fingerprint": self.fingerprint})

    def _files(self) -> list[Path]:
        self._check()
        try:
            names = [n for n in os.listdir(self.folder)
                     if n.startswith(_PREFIX) and not n.endswith(".tmp")]
        except FileNotFoundError:
            return []
        return [self.folder / n for n in sorted(names)]

    @property
    def latest(self) -> Path | None:
        """The newest checkpoint file, or None when the task has none."""
        files = self._files()
        return files[-1] if files else None

    @property
    def count(self) -> int:
        """How many checkpoints this task has saved so far (across attempts)."""
        last = self.latest
        return int(last.name[len(_PREFIX):].split(".")[0]) if last else 0

    def load(self, reader: Callable[[Path], Any] | None = None) -> Any:
        """The newest checkpoint (``pickle``, or ``reader(path)``), or None when none."""
        last = self.latest
        if last is None:
            return None
        if reader is not None:
            return reader(last)
        import pickle

        with open(last, "rb") as fh:
            return pickle.load(fh)

    # ------------------------------------------------------------------ writing
    def save(self, obj: Any = None, *, writer: Callable[[Path], Any] | None = None,
             keep: int | None = None) -> Path:
        """Save ``obj`` (pickled), or call ``writer(path)`` to write the file; atomic.
        Returns the checkpoint's path. Older checkpoints beyond ``keep`` are removed."""
        self._check()
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / META).exists():
            self.claim()
        n = self.count + 1
        final = self.folder / f"{_PREFIX}{n:06d}.{'bin' if writer else 'pkl'}"
        tmp = self.folder / f"{final.name}.{os.getpid()}.tmp"
        try:
            if writer is not None:
                writer(tmp)
            else:
                import pickle

                with open(tmp, "wb") as fh:
                    pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.folder)
        files = self._files()
        keep = max(1, keep if keep is not None else self.keep)  # never the one just saved
        for old in files[: max(0, len(files) - keep)]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return final

    def clear(self) -> None:
        """Remove every checkpoint of the task."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
