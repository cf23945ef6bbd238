"""Run one task anywhere: prepare its folder, set threads, call it, write its result file.

The worker never touches the database. A task is done only once ``.shoal-result.json`` has
been written atomically after the function returned; a failure writes ``.shoal-error.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from shoal.context.checkpoint import Checkpoints
from shoal.context.task import Files, Interrupted, Requeue, TaskContext, Upstream
from shoal.spec.experiment import Experiment, signature_args
from shoal.state import resultfile
from shoal.state.resultfile import HOST
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import staging
from shoal.worker.taskfolder import missing_output, output_stamps, prepare_task
from shoal.worker.tasklog import log_tail, task_log
from shoal.worker.taskspec import TaskSpec

_stop_requested = False


def request_stop(*_: Any) -> None:
    """Signal handler: make ``ctx.should_stop()`` true."""
    global _stop_requested
    _stop_requested = True


_stop_file: str | None = None  # (an engine without signals: a file that asks to stop)
_stop_checked = 0.0


def stop_requested() -> bool:
    global _stop_requested, _stop_checked
    if not _stop_requested and _stop_file is not None:
        now = time.monotonic()
        if now - _stop_checked >= 0.5:  # (a stat at most twice a second)
            _stop_checked = now
            _stop_requested = os.path.exists(_stop_file)
    return _stop_requested


def watch_stop_file(path: str | None) -> None:
    """Where no signal reaches a task (a Ray worker), ``path`` existing asks it to stop.
    A reused worker process starts each task from no stop request (unless it exists)."""
    global _stop_requested, _stop_file, _stop_checked
    _stop_file, _stop_checked = path, 0.0
    _stop_requested = False


def install_stop_handlers() -> None:
    """SIGTERM and SIGUSR2 ask the running task to stop (SIGUSR1 is NCCL's)."""
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, request_stop)


@contextlib.contextmanager
def redirected_output(spec: TaskSpec, header: str) -> Iterator[None]:
    """Send this process's stdout and stderr (fd 1 and 2, so C code too) to the task log."""
    sys.stdout.flush()
    sys.stderr.flush()
    log = task_log(spec)
    fd, fresh = log.open(spec.out, header)
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.close(fd, spec.out, fresh)


_limited: tuple[int, int] = (0, 0)


def limit_threads(n: int) -> None:
    """Apply the task's thread count in-process: pools created before (by a library a
    previous task imported) ignore the environment. Cheap when nothing changed."""
    global _limited
    state = (n, len(sys.modules))
    if state == _limited:
        return
    _limited = state
    if "threadpoolctl" in sys.modules or any(
        m in sys.modules for m in ("numpy", "scipy", "sklearn")
    ):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            with contextlib.suppress(Exception):
                threadpool_limits(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)


_signatures: dict[int, tuple[tuple[str, ...], bool]] = {}


def _signature(step: Any) -> tuple[tuple[str, ...], bool]:
    key = id(step)
    if key not in _signatures:
        _signatures[key] = signature_args(step, step.per)
    return _signatures[key]


def _runs_frame(spec: TaskSpec) -> Any:
    import pandas as pd

    rows = [r for rows in (spec.gather or {}).values() for r in rows]
    frame = pd.DataFrame(rows)
    return frame


def _metrics(value: Any, out: Path) -> dict[str, Any]:
    if value is None:
        return resultfile.read_metrics(out / resultfile.METRICS) or {}
    if not isinstance(value, dict):
        raise TypeError(
            f"a step function must return a dict of metrics or None, got {type(value).__name__}"
        )
    # must survive JSON: caught here, with the task, not in the controller; what is stored
    # is the converted value (numpy and torch scalars and arrays as Python numbers and lists)
    return json.loads(json.dumps(value, default=resultfile._json_default))


def _output_entries(spec: TaskSpec) -> list[list[Any]] | None:
    if spec.outputs is None:
        return None
    return [[n, [p], False] for n, p in zip(spec.out_names or [""] * len(spec.outputs),
                                            spec.outputs)]


def outcome(spec: TaskSpec, status: str, **extra: Any) -> Outcome:
    """The message a worker sends back (the result document for done tasks)."""
    return Outcome(spec.step, spec.key, spec.attempt, TaskStatus(status), **extra)


def write_failure(
    spec: TaskSpec, status: str, error: str, started: float, ended: float | None = None,
    in_log: bool = False, tail: str | None = None,
) -> Outcome:
    """Write ``.shoal-error.json`` for a failed or interrupted attempt; return the outcome.
    ``ended``: when the attempt ended (default: now); ``in_log``: say it in the task's log
    too (the task was killed from outside: nothing in its log tells why it ended);
    ``tail``: the log lines to show (default: the end of the task's log)."""
    out = spec.out
    if in_log:
        with contextlib.suppress(OSError), open(f"{out}/{resultfile.LOG}", "a") as fh:
            fh.write(f"shoal: {error}\n")
    doc = resultfile.make_result(
        experiment=spec.experiment, step=spec.step, key=spec.key, params=spec.params,
        fingerprint=spec.fingerprint, code=spec.code, inputs=spec.inputs,
        attempt=spec.attempt, started=started, ended=ended or time.time(), host=HOST,
        metrics=None, files=spec.files, outputs=output_stamps(spec, False),
    )
    doc["status"] = status
    doc["error"] = error
    doc["token"] = spec.token
    doc["log_tail"] = log_tail(Path(out)) if tail is None else tail
    with contextlib.suppress(OSError):
        resultfile.write_json_atomic(f"{out}/{resultfile.ERROR}", doc)
    return outcome(spec, status, error=error, log_tail=doc["log_tail"], doc=doc)


def write_success(
    spec: TaskSpec, metrics: dict[str, Any], started: float,
    names: Collection[str] | None = None, ended: float | None = None,
) -> Outcome:
    """Write ``.shoal-result.json`` (the task is done from here on); return the outcome.
    ``names``: where the caller knows, which of shoal's files the task folder holds (an old
    error file, checkpoints); None: look."""
    doc = resultfile.make_result(
        experiment=spec.experiment, step=spec.step, key=spec.key, params=spec.params,
        fingerprint=spec.fingerprint, code=spec.code, inputs=spec.inputs,
        attempt=spec.attempt, started=started, ended=ended or time.time(), host=HOST,
        metrics=metrics, files=spec.files, outputs=output_stamps(spec, True),
    )
    doc["token"] = spec.token
    if names is None or resultfile.ERROR in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{spec.out}/{resultfile.ERROR}")
    resultfile.write_json_atomic(f"{spec.out}/{resultfile.RESULT}", doc)
    ckpt = f"{spec.out}/{resultfile.CHECKPOINTS}"
    if (names is None or resultfile.CHECKPOINTS in names) and os.path.isdir(ckpt):
        shutil.rmtree(ckpt, ignore_errors=True)  # done: a rerun must not resume from them
    return outcome(spec, TaskStatus.DONE, doc=doc)


_env_set: dict[str, str] = {}
_user_env: dict[str, str | None] = {}  # variables a step's env= set: name -> value before


def _apply_env(env: dict[str, str], user: dict[str, str] | None = None) -> None:
    """Set the task's variables; those an earlier task's ``env=`` set and this one's does
    not are put back as they were."""
    for k in [k for k in _user_env if not user or k not in user]:
        old = _user_env.pop(k)
        _env_set.pop(k, None)
        if old is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = old
    for k in user or ():
        if k not in _user_env:
            _user_env[k] = os.environ.get(k)
    for k, v in env.items():
        if _env_set.get(k) != v:
            os.environ[k] = v
            _env_set[k] = v


def enter_task(spec: TaskSpec) -> None:
    """What every function task (or pack) starts from, whatever the task before it in this
    process did: the experiment's folder as the current directory (documented: relative
    paths resolve there), its variables, its thread limits."""
    if spec.cwd:
        os.chdir(spec.cwd)
    _apply_env(spec.env(), spec.user_env)
    limit_threads(spec.cpus)


def header(spec: TaskSpec, started: float) -> str:
    """The line that opens each attempt in the task's log."""
    return f"=== {spec.label} attempt {spec.attempt} on {HOST} at {time.ctime(started)} ===\n"


def task_context(spec: TaskSpec, should_stop: Callable[[], bool],
                 staged: dict[str, Path]) -> TaskContext:
    """The ``ctx`` a function task (or a member of a pack) gets."""
    out = Path(spec.out)
    return TaskContext(
        step=spec.step, params=dict(spec.params), out=out, threads=spec.cpus,
        device=spec.device, attempt=spec.attempt, root=Path(spec.root),
        upstream={name: Upstream(name, u["params"], Path(u["out"]), u["result"])
                  for name, u in spec.needs.items()},
        checkpoint=Checkpoints(out, spec.fingerprint), inputs=Files(spec.in_files),
        outputs=Files(_output_entries(spec)), vars=dict(spec.vars), _stop=should_stop,
        _staged=staged,
    )


def enter(spec: TaskSpec) -> dict[str, Path]:
    """:func:`enter_task`, then the step's ``stage=`` archives (unpacked once per node)."""
    enter_task(spec)
    return staging.stage(spec.stage, spec.stage_dir) if spec.stage else {}


def caught(exc: BaseException) -> tuple[TaskStatus, str]:
    """The status and error of an attempt whose code raised ``exc`` (even SystemExit: a
    task's error must not end the worker); its traceback goes to the task's log."""
    with contextlib.suppress(OSError):  # (the log's disk may be full)
        if isinstance(exc, Interrupted):
            print(f"interrupted: {exc}", file=sys.stderr)
        else:
            traceback.print_exc()
    if isinstance(exc, Interrupted):
        return TaskStatus.INTERRUPTED, f"Interrupted: {exc}"
    return TaskStatus.FAILED, f"{type(exc).__name__}: {exc}"


def finish(spec: TaskSpec, value: Any, started: float) -> Outcome:
    """The result file of a function task (or a pack member) whose code returned ``value``:
    its metrics, once its declared outputs are there; else its error file (and why, in its
    log)."""
    if value is Requeue or isinstance(value, Interrupted):
        why = "the task returned shoal.Requeue" if value is Requeue else str(value)
        return write_failure(spec, TaskStatus.INTERRUPTED, f"Interrupted: {why}", started,
                             in_log=True)
    if isinstance(value, BaseException):  # (a pack's member result)
        return write_failure(spec, TaskStatus.FAILED, f"{type(value).__name__}: {value}",
                             started, in_log=True)
    try:
        metrics = _metrics(value, Path(spec.out))
        lost = missing_output(spec)
        if lost:
            return write_failure(spec, TaskStatus.FAILED, lost, started, in_log=True)
        return write_success(spec, metrics, started)
    except Exception as exc:
        return write_failure(spec, TaskStatus.FAILED, f"{type(exc).__name__}: {exc}", started,
                             in_log=True)


def run_function(
    spec: TaskSpec, exp: Experiment, should_stop: Callable[[], bool] = stop_requested
) -> Outcome:
    """Run a function task in this process; never raises for task errors."""
    started = time.time()
    try:
        prepare_task(spec)
    except OSError as exc:
        return outcome(spec, TaskStatus.FAILED,
                       error=f"cannot prepare task folder {spec.out}: {exc}")
    step = exp.steps[spec.step]
    with redirected_output(spec, header(spec, started)):
        try:
            ctx = task_context(spec, should_stop, enter(spec))
            takes, wants_runs = _signature(step)
            kwargs = {d: spec.params[d] for d in takes}
            if wants_runs:
                kwargs["runs"] = _runs_frame(spec)
            assert step.fn is not None
            value = step.fn(ctx, **kwargs)
        except BaseException as exc:
            status, error = caught(exc)
            return write_failure(spec, status, error, started)
    return finish(spec, value, started)
