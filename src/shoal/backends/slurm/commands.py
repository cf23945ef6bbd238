"""Thin wrappers around Slurm's commands: retries with back-off on transient errors, parsing."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence

from shoal.errors import ShoalError

#: Slurm job states mapped to what shoal makes of them (data, not if-chains).
STATES = {
    "PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued",
    "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued", "RESV_DEL_HOLD": "queued",
    "SUSPENDED": "running", "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running",
    "SIGNALING": "running", "RESIZING": "running",
    "COMPLETED": "ended", "FAILED": "ended", "CANCELLED": "ended", "TIMEOUT": "ended",
    "OUT_OF_MEMORY": "ended", "NODE_FAIL": "ended", "PREEMPTED": "ended", "BOOT_FAIL": "ended",
    "DEADLINE": "ended", "SPECIAL_EXIT": "ended", "REVOKED": "ended",
}

_TRANSIENT = re.compile(
    r"(socket timed out|timed out|Unable to contact slurm controller|Resource temporarily "
    r"unavailable|Connection refused|Zero Bytes were transmitted|Slurm temporarily unable|"
    r"Transport endpoint)", re.IGNORECASE)


class SlurmError(ShoalError):
    """A Slurm command failed for good."""


def available() -> bool:
    """Whether ``sbatch`` is on PATH."""
    return shutil.which("sbatch") is not None


def run(argv: Sequence[str], *, retries: int = 5, backoff: float = 1.0,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; transient errors (socket time-outs…) are retried with back-off."""
    delay = backoff
    for attempt in range(retries + 1):
        try:
            res = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise SlurmError(
                f"{argv[0]} not found: the Slurm backend needs Slurm's commands on PATH "
                "(on a login node of a cluster; scripts/local-slurm.sh makes a test cluster)"
            ) from None
        except subprocess.TimeoutExpired:
            res = subprocess.CompletedProcess(list(argv), 1, "", f"{argv[0]}: timed out")
        if res.returncode == 0 or not _TRANSIENT.search(res.stderr or ""):
            break
        if attempt < retries:
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    if check and res.returncode != 0:
        raise SlurmError(f"{' '.join(argv[:2])} failed: {(res.stderr or res.stdout).strip()}")
    return res


def sbatch(script: str) -> str:
    """Submit a batch script (a file path); returns the job id."""
    out = run(["sbatch", "--parsable", script]).stdout.strip()
    return out.split(";", 1)[0]


def max_array_size() -> int:
    """``MaxArraySize`` of the cluster (Slurm's default 1001 when it cannot be read)."""
    value = config().get("MaxArraySize", "")
    return int(value) if value.isdigit() else 1001


def squeue(job_ids: Iterable[str]) -> dict[tuple[str, int], str]:
    """``(array job id, index) -> state`` for the elements of these arrays still known to
    Slurm (one call for all of them)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    res = run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%F|%K|%T"],
              check=False)
    if res.returncode != 0 and "Invalid job id" not in (res.stderr or ""):
        raise SlurmError(f"squeue failed: {res.stderr.strip()}")
    out: dict[tuple[str, int], str] = {}
    for line in (res.stdout or "").splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        out[(parts[0].strip(), int(parts[1]))] = parts[2].strip()
    return out


_config_cache: dict[str, str] | None = None


def config() -> dict[str, str]:
    """``scontrol show config`` as a dict (read once)."""
    global _config_cache
    if _config_cache is None:
        res = run(["scontrol", "show", "config"], check=False)
        _config_cache = {}
        for line in (res.stdout or "").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                _config_cache[key.strip()] = value.strip()
    return _config_cache


def final_states(job_ids: Iterable[str]) -> dict[tuple[str, int], str]:
    """``(array job id, index) -> final state`` (TIMEOUT, OUT_OF_MEMORY, …) of ended
    elements: from ``sacct`` where accounting exists, else from the ``jobcomp/filetxt`` log.
    One call for all of them; empty when neither is available."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    res = run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State"],
              check=False, retries=1)
    out: dict[tuple[str, int], str] = {}
    if res.returncode == 0:
        for line in res.stdout.splitlines():
            job, _, state = line.partition("|")
            head, sep, index = job.partition("_")
            if sep and index.isdigit():
                out[(head, int(index))] = state.split()[0] if state else state
        return out
    cfg = config()
    if cfg.get("JobCompType") != "jobcomp/filetxt" or not cfg.get("JobCompLoc"):
        return out
    wanted = set(ids)
    try:
        with open(cfg["JobCompLoc"]) as fh:
            for line in fh:
                d = dict(re.findall(r"(\w+)=(\S*)", line))
                array, task = d.get("ArrayJobId", ""), d.get("ArrayTaskId", "")
                if array in wanted and task.isdigit():
                    out[(array, int(task))] = d.get("JobState", "")  # the last line wins
    except OSError:
        pass
    return out


def scancel(job_ids: Iterable[str], signal: str | None = None) -> None:
    ids = sorted(set(job_ids))
    if ids:
        argv = ["scancel", *([f"--signal={signal}"] if signal else []), *ids]
        run(argv, check=False)


_partition_cache: dict[str, float | None] = {}


def partition_max_time(partition: str | None) -> float | None:
    """Seconds of a partition's ``MaxTime`` (the default partition's when None); None when
    unlimited or unknown."""
    key = partition or ""
    if key not in _partition_cache:
        res = run(["scontrol", "show", "partition", *([partition] if partition else [])],
                  check=False)
        found: float | None = None
        for block in (res.stdout or "").split("\n\n"):
            fields = dict(kv.split("=", 1) for kv in block.split() if "=" in kv)
            if not fields or (partition is None and fields.get("Default") != "YES"):
                continue
            value = fields.get("MaxTime", "UNLIMITED")
            if value not in ("UNLIMITED", "INFINITE"):
                from shoal.spec.resources import parse_duration

                try:
                    found = parse_duration("(partition)", "MaxTime", value)
                except ShoalError:
                    found = None
            break
        _partition_cache[key] = found
    return _partition_cache[key]
