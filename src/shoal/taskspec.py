"""TaskSpec: everything needed to run one task anywhere, as plain picklable/JSON data.

The scheduler builds specs from the plan; backends carry them to workers (a pipe locally, a
file on Slurm); the worker runs them and writes the result file. No database access needed.
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import SpecError
from shoal.paths import value_text

#: Thread-pool sizes a task gets (= its cpus), so that tasks side by side never oversubscribe:
#: OpenMP, BLAS and numexpr, TensorFlow's intra-op pool, numba, BLIS, Rayon (polars).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS",
               "NUMBA_NUM_THREADS", "BLIS_NUM_THREADS", "RAYON_NUM_THREADS",
               "POLARS_MAX_THREADS")
#: TensorFlow's inter-op pool runs independent ops side by side, each with intra-op threads.
INTEROP_VAR = "TF_NUM_INTEROP_THREADS"
#: Every process of a run's tasks carries it (a local run's supervisor finds them by it).
RUN_MARK = "SHOAL_RUN_ID"


@dataclass
class TaskSpec:
    """One attempt of one task."""

    experiment: str
    target: str  # how to import the experiment: "path/to/experiment.py[:name]"
    config: dict[str, Any]
    step: str
    key: str
    params: dict[str, Any]
    fingerprint: str
    code: str
    inputs: str | None
    attempt: int
    out: str
    root: str
    cwd: str
    cpus: int = 1
    gpus: float = 0.0
    devices: list[str] | None = field(default_factory=list)  # None: left to the scheduler
    mem_mb: int | None = None
    time_s: float | None = None  # the step's expected run time (Slurm's --time)
    timeout_s: float | None = None
    command: str | None = None  # rendered shell command for command steps
    argv: list[str] | None = None  # the same, when it needs no shell
    needs: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> {params,out,result}
    gather: dict[str, list[dict[str, Any]]] | None = None  # step -> rows (params, metrics, out)
    token: str = ""  # this dispatch: echoed in the result/error file, so old files never count
    stage: list[str] = field(default_factory=list)  # archives to unpack before it runs
    stage_dir: str | None = None  # where (None: node-local scratch, see shoal.staging)
    # submitted before its upstream tasks ran (--detach): read them first (shoal.deferred)
    upstream: list[dict[str, Any]] | None = None
    allow_missing: bool = False  # a gather's: rows of failed upstream tasks may be missing
    retries: int = 0  # extra attempts the worker itself makes (--detach: no controller)
    packed: bool = False  # one member of a pack: the bundle's specs go to one call
    # around the code (shoal.around): input files [[name, [paths]]] and their digests
    # (path -> digest, recorded in the result), owned outputs, vars, env, setup lines, how
    # a command's metrics are read ({"file": path} or {"patterns": [[name, regex]]})
    in_files: list[list[Any]] | None = None
    files: dict[str, str] | None = None
    outputs: list[str] | None = None
    out_names: list[str] | None = None
    stale_outputs: list[str] | None = None  # what it owned before outputs= changed
    vars: dict[str, Any] = field(default_factory=dict)
    user_env: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    cleanup: list[str] | None = None  # run after the command was killed (a container's rm)
    run_id: str = ""  # the run that dispatched it (RUN_MARK in its environment)

    @property
    def label(self) -> str:
        return f"{self.step}[{self.key.replace('/', ',')}]" if self.key else self.step

    @property
    def device(self) -> str:
        if self.devices is None:  # the cluster's scheduler set CUDA_VISIBLE_DEVICES
            return "cuda:0" if self.gpus > 0 else "cpu"
        return "cuda:0" if self.devices else "cpu"

    def env(self) -> dict[str, str]:
        """Environment variables the task runs with (threads and GPU visibility)."""
        env = dict.fromkeys(THREAD_VARS, str(self.cpus))
        env[INTEROP_VAR] = str(min(self.cpus, 2))
        env.update({
            "SHOAL_STEP": self.step,
            "SHOAL_TASK": self.key,
            "SHOAL_OUT": self.out,
            "SHOAL_ATTEMPT": str(self.attempt),
            "SHOAL_CHECKPOINTS": f"{self.out}/.shoal-checkpoints",
        })
        if self.run_id:
            env[RUN_MARK] = self.run_id
        if self.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)
        if self.user_env:  # the step's env= (the user's word wins)
            env.update(self.user_env)
        return env

    def to_dict(self) -> dict[str, Any]:
        """Its fields (shallow: the values are plain data already)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(**data)


_SHELL_META = set("|&;<>()$`\\\"'*?[]#~=%!{}\n")


class _QuotingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, RawField):
            return format(value.text, format_spec)
        text = format(value, format_spec) if format_spec else (
            value_text(value) if isinstance(value, (bool, int, float, str)) else str(value)
        )
        return shlex.quote(text)


class RawField:
    """A template value inserted as is (not shell-quoted), e.g. ``"$SHOAL_STAGED_DATA"``."""

    def __init__(self, text: str) -> None:
        self.text = text


_needs_shell: dict[str, bool] = {}
_argv_cache: dict[str, list[str] | None] = {}


def gather_row(params: dict[str, Any], metrics: dict[str, Any], out: str,
               step: str | None) -> dict[str, Any]:
    """One row of a gather's ``runs``: the upstream task's params, its metrics (prefixed
    ``metric_`` where a name clashes), ``out``, and ``step`` when several steps are gathered."""
    row = dict(params)
    for mk, mv in metrics.items():
        row[f"metric_{mk}" if mk in row or mk == "out" else mk] = mv
    row["out"] = out
    if step is not None:
        row["step"] = step
    return row


_QUOTING = _QuotingFormatter()
_Parts = list[tuple[str, str | None, str]]
_simple_parts: dict[str, _Parts | None] = {}


def _fill(template: str, values: dict[str, Any]) -> str:
    """``template`` filled with shell-quoted values: a template whose fields are plain names
    (``{site}``, ``{out:>8}``) is parsed once; others go through the formatter."""
    if template in _simple_parts:
        parts = _simple_parts[template]
    else:
        parsed = list(string.Formatter().parse(template))
        simple = all(name is None or (name.isidentifier() and conv is None
                                      and "{" not in (spec or ""))
                     for _, name, spec, conv in parsed)
        parts = [(lit, name, spec or "") for lit, name, spec, _ in parsed] if simple else None
        if len(_simple_parts) < 1024:
            _simple_parts[template] = parts
    if parts is None:
        return _QUOTING.vformat(template, (), values)
    field = _QUOTING.format_field
    return "".join([lit if name is None else lit + field(values[name], spec)
                    for lit, name, spec in parts])


def render_command(template: str, values: dict[str, Any]) -> tuple[str, list[str] | None]:
    """The command with every value shell-quoted, and its argv when no shell is needed."""
    cmd = _fill(template, values)
    shell = _needs_shell.get(template)
    if shell is None:
        literal = "".join(t for t, *_ in string.Formatter().parse(template))
        shell = _needs_shell[template] = (
            any(c in _SHELL_META for c in literal) or "{staged[" in template)
    if shell:
        return cmd, None
    if cmd in _argv_cache:
        argv = _argv_cache[cmd]
        return cmd, None if argv is None else list(argv)
    try:
        argv = shlex.split(cmd)
    except ValueError:
        argv = None
    if len(_argv_cache) < 4096:
        _argv_cache[cmd] = argv
    return cmd, argv


def fill_command(step: str, template: str, values: dict[str, Any],
                 where: str = "") -> tuple[str, list[str] | None]:
    """:func:`render_command`, with a field that cannot be filled (``{lr:.2q}`` for a float,
    ``{a[0]}`` for a number) as one error naming the step, the values (``where``) and the fix."""
    try:
        return render_command(template, values)
    except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise SpecError(
            f"step '{step}': the command template {template!r} cannot be filled{where}: "
            f"{type(exc).__name__}: {exc}; fix the field (a format spec must suit every "
            "value of its dimension)"
        ) from None
