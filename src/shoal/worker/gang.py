"""Multi-process tasks (``procs=N``): the ranks of one task, started, watched and ended as one.

Each task gets a rendezvous port of its own: a socket bound to a free port (with
``SO_REUSEADDR``, never listening) is held for the task's whole run, so no other task's
port lookup can be handed the same one, while rank 0's ``torch.distributed`` store may still
bind and listen on it. So any number of DDP tasks run side by side on one machine.

Every rank gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` (and one GPU of the task's when it has one per rank). A
function step's rank runs ``python -m shoal.worker.rank`` (the step function, with
``ctx.rank``); rank 0's return value is the task's result. A command step's ranks are N
copies of the command (as ``srun`` starts them), or one copy when the command starts its own
ranks (``torchrun --nproc-per-node {procs}``). Rank 0 writes to the task's log, rank k to
``.shoal-ranks/k.log``.

One rank that fails ends every rank (they would wait in a collective forever) and fails the
task with that rank's log tail; ``hang_timeout=`` kills a task whose ranks all went silent
(no log output, no checkpoint) that long — the NCCL hang that prints nothing; a stop request
(SIGTERM/SIGUSR2 to this process) reaches every rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.context.checkpoint import Checkpoints
from shoal.state import resultfile
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import task as W
from shoal.worker.command import finish_command
from shoal.worker.taskfolder import prepare_task
from shoal.worker.tasklog import log_tail
from shoal.worker.taskspec import TaskSpec

RANKS = ".shoal-ranks"  # the task folder's subfolder of rank logs and reports
POLL_S = 0.1
KILL_GRACE_S = 3.0  # after one rank failed, the others get this long to exit on SIGTERM


def reserve_port() -> socket.socket:
    """A socket holding a free TCP port for one task (see the module docstring)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 0))
    return s


def rank_env(spec: TaskSpec, rank: int, port: int, addr: str = "127.0.0.1") -> dict[str, str]:
    """The variables of one rank (single node: local rank = rank)."""
    n = spec.starts
    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(n),
           "LOCAL_WORLD_SIZE": str(n), "GROUP_RANK": "0", "NODE_RANK": "0",
           "MASTER_ADDR": addr, "MASTER_PORT": str(port), "SHOAL_PROCS": str(spec.procs)}
    devices = _devices(spec)
    if n > 1 and devices and len(devices) % n == 0:  # an equal share of the task's GPUs
        per = len(devices) // n
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[rank * per:(rank + 1) * per])
    return env


def _devices(spec: TaskSpec) -> list[str]:
    if spec.devices is not None:
        return list(spec.devices)
    given = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # (set by the cluster's scheduler)
    return [d for d in given.split(",") if d]


@dataclass
class _Rank:
    rank: int
    proc: subprocess.Popen[bytes]
    log: str
    code: int | None = None
    ended: float = float("inf")  # when it was seen to end (the first to fail is the cause)


def run_ranks(spec: TaskSpec) -> Outcome:
    """Run a multi-process task here; never raises for the task's failure."""
    started = time.time()
    try:
        prepare_task(spec)
        os.makedirs(f"{spec.out}/{RANKS}", exist_ok=True)
        # (checkpoints of another fingerprint go now, before any rank saves its own)
        Checkpoints(spec.out, spec.fingerprint)._check()
    except OSError as exc:
        return W.outcome(spec, TaskStatus.FAILED,
                         error=f"cannot prepare task folder {spec.out}: {exc}")
    with reserve_port() as held:
        port = held.getsockname()[1]
        ranks = _start(spec, port, started)
        why, status = _watch(spec, ranks)
    if spec.command is not None:
        return _command_end(spec, ranks, why, status, started)
    reports = [_report(spec, k) for k in range(spec.starts)]
    # the cause: a rank that reported its failure — the first to (a rank whose peer died
    # fails too, "connection closed") — else the first process that died
    bad = min((r for r in reports if r.get("status") not in (None, TaskStatus.DONE)),
              key=lambda r: r.get("ended") or float("inf"), default=None)
    failed = min((r for r in ranks if r.code not in (0, None)), key=lambda r: r.ended,
                 default=None)
    if failed is not None and why is None and bad is None and all(
            r.get("status") == TaskStatus.DONE for r in reports):
        # every rank finished its work and said so; one died on its way out (a library's
        # teardown): the task's result stands, and its log says what happened
        with contextlib.suppress(OSError), open(rank_log(spec, 0), "a") as fh:
            fh.write(f"shoal: note: {_who(failed)} {_exit_text(failed.code or 0)} after it "
                     "reported its result\n")
        failed = None
    if why is not None or bad is not None or failed is not None:
        who = 0
        if why is None and bad is not None:
            status = TaskStatus(bad["status"])
            why, who = f"rank {bad['rank']}: {bad.get('error')}", int(bad["rank"])
        elif why is None:
            assert failed is not None
            who = max(failed.rank, 0)
            why = f"{_who(failed)} {_exit_text(failed.code or 0)}"
        return W.write_failure(spec, status, why, started, in_log=True,
                               tail=_tail(spec, who))
    first = reports[0]
    if first.get("status") is None:
        return W.write_failure(spec, TaskStatus.FAILED, "rank 0 ended without its result",
                               started, in_log=True)
    return W.finish(spec, first.get("metrics") or {}, started)


def rank_log(spec: TaskSpec, rank: int) -> str:
    """Rank 0 writes to the task's log, rank k to ``.shoal-ranks/k.log``."""
    return f"{spec.out}/{resultfile.LOG}" if rank == 0 else f"{spec.out}/{RANKS}/{rank}.log"


def _tail(spec: TaskSpec, rank: int) -> str:
    path = Path(rank_log(spec, rank))
    return log_tail(path.parent, name=path.name)


def _who(r: _Rank) -> str:
    return "srun (its ranks)" if r.rank < 0 else f"rank {r.rank}"


def on_slurm(spec: TaskSpec) -> bool:
    """Whether the ranks start through ``srun`` (inside a Slurm job, several processes)."""
    return bool(os.environ.get("SLURM_JOB_ID")) and spec.starts > 1 and bool(
        shutil.which("srun"))


def _start(spec: TaskSpec, port: int, started: float) -> list[_Rank]:
    """Start the ranks, each with its log: here, or through ``srun`` in a Slurm job."""
    slurm = on_slurm(spec)
    addr = _first_host() if slurm else "127.0.0.1"
    with open(f"{spec.out}/{resultfile.LOG}", "a") as fh:
        fh.write(W.header(spec, started) + (f"$ {spec.command}\n" if spec.command else "")
                 + f"shoal: {spec.starts} rank(s), rendezvous {addr}:{port}"
                 + (" (srun)" if slurm else "") + "\n")
    base = {**os.environ, **spec.env()}
    if spec.command is None:
        path = f"{spec.out}/{RANKS}/spec.pkl"
        with open(path, "wb") as fh:
            pickle.dump(spec, fh)
        argv = [sys.executable, "-m", "shoal.worker.rank", path]
    else:
        argv = spec.argv or ["/bin/sh", "-c", spec.command]
    if slurm:
        return [_srun(spec, argv, {**base, **rank_env(spec, 0, port, addr)})]
    ranks = []
    for k in range(spec.starts):
        log = rank_log(spec, k)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*argv, str(k)] if spec.command is None else argv,
                env={**base, **rank_env(spec, k, port)}, cwd=spec.cwd or None,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        ranks.append(_Rank(k, proc, log))
    return ranks


#: run by srun as each rank: its variables from Slurm's, its log, its exit status kept
_RANK_SH = (
    'export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" NODE_RANK="$SLURM_NODEID" '
    'GROUP_RANK="$SLURM_NODEID" LOCAL_WORLD_SIZE="${SLURM_NTASKS_PER_NODE:-$LOCAL_WORLD_SIZE}"; '
    'if [ "$RANK" = 0 ]; then log="$SHOAL_OUT/.shoal.log"; '
    'else log="$SHOAL_OUT/.shoal-ranks/$RANK.log"; fi; '
    '"$@" >>"$log" 2>&1; code=$?; echo "$code" >"$SHOAL_OUT/.shoal-ranks/$RANK.code"; '
    'exit "$code"')


def _srun(spec: TaskSpec, argv: list[str], env: dict[str, str]) -> _Rank:
    """One ``srun`` for all ranks of the task, over the job's nodes (``--kill-on-bad-exit``:
    a rank that fails ends the others). A function's rank reads its number from Slurm."""
    for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "CUDA_VISIBLE_DEVICES"):
        env.pop(k, None)  # (set per rank from Slurm's variables; GPUs bound by Slurm)
    cmd = ["srun", f"--ntasks={spec.starts}", f"--cpus-per-task={spec.cpus}",
           "--kill-on-bad-exit=1", "--export=ALL", "/bin/sh", "-c", _RANK_SH, "shoal-rank",
           *argv, *(["env"] if spec.command is None else [])]
    with open(rank_log(spec, 0), "ab") as log:  # (srun's own words: a step it cannot make)
        proc = subprocess.Popen(cmd, env=env, cwd=spec.cwd or None, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    return _Rank(-1, proc, rank_log(spec, 0))


def _first_host() -> str:
    """The first node of the job: where this process (the batch step) runs rank 0's port."""
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    return socket.gethostname()


def _watch(spec: TaskSpec, ranks: list[_Rank]) -> tuple[str | None, TaskStatus]:
    """Wait for every rank; end them all when one fails, when they hang, or on a stop
    request. Returns why shoal ended them (None: they ended by themselves)."""
    forwarded = False
    why: str | None = None
    status = TaskStatus.FAILED
    last = time.time()
    seen = _activity(spec, ranks)
    while any(r.code is None for r in ranks):
        time.sleep(POLL_S)
        for r in ranks:
            if r.code is None:
                r.code = r.proc.poll()
                if r.code is not None:
                    r.ended = time.time()
        if W.stop_requested() and not forwarded:
            forwarded = True
            _signal(ranks, signal.SIGUSR2)
        if any(r.code not in (0, None) for r in ranks) and any(r.code is None for r in ranks):
            _end(ranks)  # (one rank failed: the others would wait for it forever)
            return None, TaskStatus.INTERRUPTED if forwarded else status
        if spec.hang_timeout_s is not None:
            now = time.time()
            act = _activity(spec, ranks)
            if act != seen:
                seen, last = act, now
            elif now - last > spec.hang_timeout_s:
                why = (f"hung: no output on any rank's log and no checkpoint for "
                       f"{now - last:.0f} s (hang_timeout={spec.hang_timeout_s:g} s); "
                       "all ranks killed")
                _end(ranks, grace=0.0)
                return why, TaskStatus.FAILED
    if forwarded:
        status = TaskStatus.INTERRUPTED
    return why, status


def _activity(spec: TaskSpec, ranks: list[_Rank]) -> tuple[float, ...]:
    """What changes while a task makes progress: its logs' sizes, its checkpoints' times."""
    out: list[float] = []
    for k in range(spec.starts):
        with contextlib.suppress(OSError):
            out.append(os.stat(rank_log(spec, k)).st_size)
    folder = f"{spec.out}/{resultfile.CHECKPOINTS}"
    for sub in ["", *(f"/rank-{k}" for k in range(1, spec.starts))]:  # (each rank's own)
        with contextlib.suppress(OSError):
            out.append(os.stat(folder + sub).st_mtime)
    return tuple(out)


def _signal(ranks: list[_Rank], sig: int) -> None:
    for r in ranks:
        if r.code is None:
            with contextlib.suppress(ProcessLookupError):
                r.proc.send_signal(sig)


def _end(ranks: list[_Rank], grace: float = KILL_GRACE_S) -> None:
    """SIGTERM to the ranks still running, SIGKILL after ``grace``; wait for all."""
    _signal(ranks, signal.SIGTERM)
    deadline = time.time() + grace
    for r in ranks:
        try:
            r.proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        r.code = r.proc.returncode


def _report(spec: TaskSpec, rank: int) -> dict[str, Any]:
    """What a function rank wrote at its end (``{}``: nothing, it died)."""
    try:
        with open(f"{spec.out}/{RANKS}/{rank}.json") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {"rank": rank}
    doc["rank"] = rank
    return doc


def _command_end(spec: TaskSpec, ranks: list[_Rank], why: str | None, status: TaskStatus,
                 started: float) -> Outcome:
    if why is not None:
        return W.write_failure(spec, status, why, started, in_log=True)
    stopped = status == TaskStatus.INTERRUPTED
    codes = {r.rank: r.code or 0 for r in ranks}
    if -1 in codes:  # (srun: each rank left its status)
        codes = {k: _code(spec, k, codes[-1]) for k in range(spec.starts)}
    bad = next((k for k in sorted(codes) if codes[k] != 0), None)
    if bad is None or bad == 0:
        return finish_command(spec, 0 if bad is None else codes[0], started, stopped)
    return W.write_failure(
        spec, TaskStatus.INTERRUPTED if stopped else TaskStatus.FAILED,
        f"rank {bad}: command {_exit_text(codes[bad])}", started, in_log=True,
        tail=_tail(spec, bad))


def _code(spec: TaskSpec, rank: int, default: int) -> int:
    try:
        with open(f"{spec.out}/{RANKS}/{rank}.code") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return default or 1  # (it never got to say: killed with the others)


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
