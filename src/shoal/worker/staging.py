"""Staging: many small input files travel as one archive and are unpacked once per node.

Shared cluster filesystems choke on thousands of small files read by thousands of tasks
(seed 003). ``stage=["data.tar"]`` (on the experiment or a step) unpacks each archive once
into node-local scratch — ``$SLURM_TMPDIR``, else ``$TMPDIR``, else ``/tmp`` — under a lock
with a marker, so the tasks of one job (a bundle) and every later job on the node share it;
locally it goes once into ``<root>/.shoal/stage``. ``ctx.staged("data")`` gives the folder;
command steps get ``{staged[data]}`` (and ``$SHOAL_STAGED_DATA``).

The unpacked copy is keyed by the archive's path, size and modification time: a rebuilt
archive is unpacked afresh, an unchanged one never twice.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from shoal.errors import ShoalError
from shoal.spec.codehash import blake2b

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MARKER = ".shoal-staged"

_done: dict[Path, bool] = {}  # unpacked folders this process has seen complete


def archive_name(path: str | Path) -> str:
    """The name tasks use for an archive: ``data`` for ``data.tar`` / ``data.tar.gz``."""
    base = os.path.basename(str(path))
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def env_name(name: str) -> str:
    """``SHOAL_STAGED_<NAME>``: the variable a command step finds the folder in."""
    return "SHOAL_STAGED_" + "".join(c if c.isalnum() else "_" for c in name).upper()


def scratch_base() -> Path:
    """Node-local scratch for staged archives (on a cluster node)."""
    for var in ("SLURM_TMPDIR", "TMPDIR"):
        value = os.environ.get(var)
        if value and os.path.isdir(value):
            return Path(value) / f"shoal-stage-{os.getuid()}"
    return Path("/tmp") / f"shoal-stage-{os.getuid()}"


def resolve(archives: Iterable[str], folder: Path | None, step: str) -> list[str]:
    """Absolute paths of a step's archives (relative ones are relative to the experiment's
    folder); an archive that does not exist is an error naming the step and the fix."""
    out: list[str] = []
    for a in archives:
        p = Path(a).expanduser()
        if not p.is_absolute() and folder is not None:
            p = folder / p
        if not p.is_file():
            raise ShoalError(
                f"step '{step}': stage= archive {a!r} not found ({p}); create it with "
                f"`shoal pack-data DIR -o {a}` or fix the path"
            )
        if str(p) not in out:
            out.append(str(p))
    return out


def unpack(archive: str | Path, base: str | Path) -> Path:
    """Unpack ``archive`` under ``base`` once (lock + marker); return the folder."""
    archive, base = str(archive), Path(base)
    try:
        st = os.stat(archive)
    except OSError as exc:
        raise ShoalError(f"stage= archive {archive} cannot be read: {exc}") from None
    key = blake2b(f"{archive}\0{st.st_size}\0{st.st_mtime_ns}".encode(),
                  digest_size=6).hexdigest()
    target = base / f"{archive_name(archive)}-{key}"
    if _done.get(target) is None and not (target / MARKER).exists():
        base.mkdir(parents=True, exist_ok=True)
        with open(base / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # others wait for the one unpacking
            if not (target / MARKER).exists():
                _extract(archive, base, target)
    _done[target] = True  # this process saw it whole: no need to look at the marker again
    return target


def _extract(archive: str, base: Path, target: Path) -> None:
    tmp = base / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)  # a half-made one (no marker)
    started = time.time()
    import tarfile  # (here: most runs stage nothing)

    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(tmp)
        (tmp / MARKER).write_text(
            f"{archive}\nunpacked by pid {os.getpid()} on {os.uname().nodename} in "
            f"{time.time() - started:.2f} s\n"
        )
        os.rename(tmp, target)
    except (OSError, tarfile.TarError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ShoalError(f"cannot unpack {archive} into {base}: {exc}") from None


def stage(archives: Sequence[str], stage_dir: str | None) -> dict[str, Path]:
    """Unpack a task's archives (once per node or run folder); ``{name: folder}``."""
    if not archives:
        return {}
    base = Path(stage_dir) if stage_dir else scratch_base()
    return {archive_name(a): unpack(a, base) for a in archives}


def stage_env(archives: Sequence[str], stage_dir: str | None) -> dict[str, str]:
    """The ``SHOAL_STAGED_<NAME>`` variables of a command task (unpacking first)."""
    return {env_name(n): str(p) for n, p in stage(archives, stage_dir).items()}


def pack_data(folder: str | Path, output: str | Path, compress: bool = False) -> int:
    """Write the files under ``folder`` into one archive (``shoal pack-data``); returns the
    number of files. The archive holds the folder's *contents*, so ``ctx.staged(name)`` is
    the folder itself."""
    src = Path(folder)
    if not src.is_dir():
        raise ShoalError(f"pack-data: {folder} is not a folder")
    out = Path(output)
    if not out.name.endswith((".tar", ".tar.gz", ".tgz")):
        raise ShoalError(f"pack-data: -o {output} must end with .tar, .tar.gz or .tgz")
    compress = compress or out.name.endswith((".gz", ".tgz"))
    skip = out.resolve()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    n = 0
    import tarfile

    with tarfile.open(tmp, "w:gz" if compress else "w") as tar:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.resolve() == skip or name.startswith(f".{out.name}.tmp-"):
                    continue
                tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
                n += 1
    os.replace(tmp, out)
    return n
