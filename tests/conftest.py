"""Shared fixtures: experiment files in temp dirs, the CLI in-process, fake task completion."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from shoal.cli.main import main
from shoal.plan.build import DONE, Plan, task_inputs
from shoal.spec.experiment import Experiment
from shoal.spec.loader import load_experiment
from shoal.state import resultfile
from shoal.state.store import rescan

HEADER = "import shoal\n"


@pytest.fixture
def write_exp(tmp_path: Path) -> Callable[..., Path]:
    """Write an experiment file (dedented; ``import shoal`` prepended) and return its path."""

    def write(body: str, name: str = "experiment.py") -> Path:
        path = tmp_path / name
        path.write_text(HEADER + textwrap.dedent(body))
        return path

    return write


class CLI:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return rc, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CLI:
    """Run ``shoal ...`` in-process: returns (exit code, stdout, stderr)."""
    return CLI(capsys)


def complete(
    exp: Experiment,
    steps: Iterable[str] | None = None,
    failed: Iterable[tuple[str, str]] = (),
    metrics: Callable[[str, dict], dict] | None = None,
) -> Plan:
    """Mark the tasks that would run as done (or failed) by writing their result files the
    way a worker does, then rebuild the store with a rescan. Returns the plan it completed."""
    plan = exp.plan()
    wanted = set(steps) if steps is not None else None
    bad = set(failed)
    run_ids = {name: list(sp.run_ids) for name, sp in plan.steps.items()}
    now = time.time()
    for name, sp in plan.steps.items():
        if wanted is not None and name not in wanted:
            continue
        for i, key in enumerate(sp.keys):
            if sp.state[i] == DONE:
                continue
            d = exp.root / name / key if key else exp.root / name
            meta = d
            meta.mkdir(parents=True, exist_ok=True)
            params = sp.param_dict(i)
            doc = resultfile.make_result(
                experiment=exp.name, step=name, key=key, params=params,
                fingerprint=sp.fps[i], code=sp.code, inputs=task_inputs(sp, i, run_ids),
                attempt=1, started=now, ended=now + 1, host=socket.gethostname(),
                metrics=metrics(name, params) if metrics else {"value": 1.0},
                files=sp.files.digests_of(i) if sp.files and sp.files.inputs else None,
            )
            if (name, key) in bad:
                doc["status"] = "failed"
                doc["error"] = "boom"
                resultfile.write_json_atomic(meta / resultfile.ERROR, doc)
                (meta / resultfile.RESULT).unlink(missing_ok=True)
            else:
                resultfile.write_json_atomic(meta / resultfile.RESULT, doc)
                (meta / resultfile.ERROR).unlink(missing_ok=True)
                run_ids[name][i] = doc["run_id"]
    rescan(exp.root)
    return plan


@pytest.fixture
def load() -> Callable[..., Experiment]:
    """Load an experiment file as the CLI does."""

    def _load(path: Path, **config: object) -> Experiment:
        return load_experiment(str(path), config)

    return _load


@pytest.fixture(autouse=True)
def _clean_modules() -> Iterable[None]:
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        if name in ("experiment",) or name.startswith("shoal_experiment"):
            del sys.modules[name]
    sys.path[:] = path


def start_until(args: list[str], ready: Callable[[], bool], timeout: float = 60) -> Any:
    """Start ``shoal ARGS`` (text output), wait until ``ready()`` — failing if the run ends
    first — and return the still running process."""
    import subprocess

    from test_run import shoal_cmd

    proc = subprocess.Popen([*shoal_cmd(), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"not ready, or the run ended: {proc.communicate()}")
        time.sleep(0.05)
    return proc


def kill9_when(args: list[str], ready: Callable[[], bool], timeout: float = 60) -> None:
    """Start ``shoal ARGS``, wait until ``ready()`` (failing if the run ends first), then
    SIGKILL it, as the OOM killer or a lost machine would."""
    import signal

    proc = start_until(args, ready, timeout)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
