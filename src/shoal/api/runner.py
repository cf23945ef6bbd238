"""``shoal run``: lock the root, plan, run the plan on a backend, report."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.plan.build import build_plan
from shoal.schedule.controller import Controller, RunOptions, RunReport
from shoal.schedule.slots import Slots, detect_cpus, detect_gpus, detect_mem_mb
from shoal.spec.experiment import Experiment
from shoal.spec.grid import Value
from shoal.state.lock import RootLock
from shoal.state.store import Store


def run_experiment(
    exp: Experiment,
    *,
    jobs: int | None = None,
    gpus: Sequence[int | str] | None = None,
    mem_mb: int | None = None,
    retries: int | None = None,
    keep_going: bool = True,
    only: Mapping[str, Sequence[Value]] | None = None,
    grace_s: float = 30.0,
    progress: str = "auto",
    progress_interval: float = 10.0,
    backend: str = "local",
    slurm: Any = None,
    detach: bool = False,
    max_requeues: int | None = None,
    missing_inputs: str = "error",
    address: str | None = None,
    ray: Any = None,
    yes: bool = False,
    ask: Any = None,
) -> Any:
    """Run what the plan says must run; returns the report. Resumes where it stopped.

    ``backend="slurm"`` submits job arrays (``slurm``: a
    :class:`~shoal.backends.slurm.SlurmOptions`) and follows them until they end; it first
    attaches to the tasks of an earlier ``--detach`` that Slurm still holds. ``detach=True``
    submits every step at once (with dependencies) and returns a
    :class:`~shoal.schedule.runreport.DetachReport` without waiting.
    ``missing_inputs="skip"``: tasks whose input files are missing do not run (nor what
    depends on them) instead of the run stopping before it starts. ``backend="ray"``: on
    the Ray cluster at ``address`` (default ``$RAY_ADDRESS``), with ``ray`` (a
    :class:`~shoal.backends.ray.options.RayOptions`, a profile's ``[ray]`` table).

    A run whose config differs from the last run's on this root, and that would replace
    done results of it, stops before it starts unless ``yes`` (or ``ask(message)``, the
    question on a terminal, says yes): switching configs never loses results by accident.
    """
    if backend not in ("local", "slurm", "ray"):
        raise ShoalError(f"unknown backend '{backend}' (available: local, slurm, ray)")
    if detach and backend != "slurm":
        raise ShoalError("--detach needs --backend slurm (a local run ends with its process)")
    if jobs is not None and jobs < 1:
        raise ShoalError(f"--jobs {jobs}: give at least 1")
    root: Path = exp.root
    if backend == "slurm" and slurm is not None:
        _profile_cpus(exp, slurm)
    exp.validate()
    for w in exp.warnings:
        print(f"shoal: warning: {w}", file=sys.stderr)
    lock = RootLock(root).acquire()
    try:
        shutil.rmtree(root / ".shoal" / "scratch", ignore_errors=True)  # workers' spare logs
        with Store.open(root, create=True) as store:
            plan = build_plan(exp, root=root, only=only, store=store,
                              missing_inputs=missing_inputs)
            if not yes:
                _guard_config_switch(exp, plan, store, ask)
            from shoal.api.progress import make_progress

            be: Any
            alive: dict[str, str] = {}
            if backend == "slurm":
                from shoal.backends.slurm import SlurmBackend, SlurmOptions, commands
                from shoal.backends.slurm import detach as detached

                if not commands.available():
                    raise ShoalError(
                        "--backend slurm: sbatch is not on PATH; run on a cluster's login "
                        "node (or start a test cluster with scripts/local-slurm.sh)"
                    )
                slots = Slots.cluster()
                be = SlurmBackend(root=root, experiment=exp.name,
                                  options=slurm or SlurmOptions())
                states = detached.snapshot(root)  # before ingesting: see detach.snapshot
                if states is not None:  # (an element that ended before the snapshot left
                    # its result file: planned again, it counts as done, not resubmitted)
                    plan = build_plan(exp, root=root, only=only, store=store,
                                      missing_inputs=missing_inputs)
                if detached.ingest(plan, store):  # what an earlier run or --detach left
                    plan = build_plan(exp, root=root, only=only, store=store,
                                      missing_inputs=missing_inputs)
                be.adopt, alive = detached.live(root, states, prune=True)
                _cancel_stale(plan, be.adopt)
            elif backend == "ray":
                from shoal.backends.ray.backend import RayBackend
                from shoal.backends.ray.options import RayOptions

                _refuse_live_detached(root)
                ray = ray if ray is not None else RayOptions.from_profile(None, address)
                ray.address = address or ray.address
                be = RayBackend(root=root, options=ray)
                cpus, devices, mem = be.capacity()  # (Ray places each task on a node)
                slots = Slots.local(jobs or cpus, devices, mem_mb if mem_mb is not None else mem)
                if jobs:
                    be.grows = False  # (--jobs: the user's limit, whatever the cluster has)
            else:
                from shoal.backends.local.backend import LocalBackend

                _refuse_live_detached(root)
                cpus = jobs or detect_cpus()
                slots = Slots.local(
                    cpus, [str(g) for g in gpus] if gpus is not None else detect_gpus(),
                    mem_mb if mem_mb is not None else detect_mem_mb(),
                )
                be = LocalBackend(
                    target=exp.target or str(exp.source), config=dict(exp.config),
                    cwd=str(exp.source.parent if exp.source else Path.cwd()), max_workers=cpus,
                )
            if max_requeues is None:
                max_requeues = slurm.max_requeues if slurm is not None else 10
            opts = RunOptions(retries=retries, keep_going=keep_going, grace_s=grace_s,
                              max_requeues=max_requeues)
            if detach and alive:
                raise ShoalError(
                    f"a detached submission on {root} is still queued or running "
                    f"({len(alive)} array elements): `shoal status` follows it, "
                    "`shoal run` without --detach attaches to it, `shoal cancel` drops it")
            ctl = Controller(plan, store, be, slots, opts)
            if detach:
                store.set_meta("config", json.dumps(exp.config, sort_keys=True))
                return ctl.submit_detached()
            ctl.guard = lock.lost
            for w in ctl.report.warnings:
                print(f"shoal: warning: {w}", file=sys.stderr)
            store.set_meta("config", json.dumps(exp.config, sort_keys=True))
            display = make_progress(progress, progress_interval) if ctl.todo else None
            ctl.on_progress = display
            cwd = os.getcwd()
            try:
                return ctl.run()
            finally:
                os.chdir(cwd)
                if display is not None:
                    display.close()
    finally:
        lock.release()


def _guard_config_switch(exp: Experiment, plan: Any, store: Store, ask: Any) -> None:
    """Stop before a run with another ``--config`` replaces the last run's done results
    (they are *changed* under the new config), unless ``ask`` says yes."""
    from shoal.plan.build import CHANGED

    old = store.get_meta("config")
    if old is None or old == json.dumps(exp.config, sort_keys=True):
        return
    changed = {name: n for name, sp in plan.steps.items() if (n := sp.state.count(CHANGED))}
    if not changed:
        return
    before = json.loads(old)

    def shown(cfg: dict[str, Any]) -> str:
        return " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(cfg.items())) or "(defaults)"

    total = sum(changed.values())
    per = ", ".join(f"{s} {n:,}" for s, n in changed.items())
    msg = (f"the last run on {plan.root} used --config {shown(before)}; this one uses "
           f"{shown(exp.config)} and would replace {total:,} done results of that run "
           f"({per})")
    if ask is not None and ask(msg):
        return
    raise ShoalError(f"{msg}. Nothing ran. To keep both, give this config its own run root "
                     f"(--root DIR); to replace them, pass --yes (or run with the last "
                     f"run's --config)")


def _profile_cpus(exp: Experiment, slurm: Any) -> None:
    """A profile's ``[steps.X] cpus`` (``shoal tune --write-profile``) is step X's cpus= on
    that cluster: its threads and its --cpus-per-task."""
    from dataclasses import replace

    for name, step in exp.steps.items():
        cpus = slurm.for_step(name).cpus
        if cpus is not None and "cpus" not in step.resource_dims:
            step.resources = replace(step.resources, cpus=int(cpus))


def _refuse_live_detached(root: Path) -> None:
    """A local run must not race a detached Slurm submission for the same task folders."""
    if not (root / ".shoal" / "slurm" / "detached.json").exists():  # (detach.manifest_path)
        return  # (nothing detached: no need to load the Slurm backend)
    from shoal.backends.slurm import commands
    from shoal.backends.slurm import detach as detached

    if not detached.manifest_path(root).exists() or not commands.available():
        return
    try:
        _, alive = detached.live(root, detached.snapshot(root))
    except commands.SlurmError:
        return
    if alive:
        raise ShoalError(
            f"a detached Slurm submission on {root} is still queued or running "
            f"({len(alive)} array elements): follow it with `shoal status`, attach with "
            "`shoal run --backend slurm`, or drop it with `shoal cancel` before a local run"
        )


def _cancel_stale(plan: Any, adopt: dict[tuple[str, str], Any]) -> None:
    """Cancel detached elements that run an out-of-date version of a task (the code or
    config changed since --detach): their tasks are submitted afresh instead."""
    from shoal.backends.slurm import commands

    fps = {(name, key): sp.fps[i] for name, sp in plan.steps.items()
           for i, key in enumerate(sp.keys)}
    stale = {f"{job}_{index}" for task, (job, index, _t, fp) in adopt.items()
             if fps.get(task) not in (None, fp)}
    if stale:
        print(f"shoal: cancelling {len(stale)} detached array element(s) running an older "
              "version of their tasks", file=sys.stderr)
        commands.scancel(sorted(stale))
        for task in [t for t, (job, index, _tk, _fp) in adopt.items()
                     if f"{job}_{index}" in stale]:
            del adopt[task]


def print_report(report: RunReport, stream: Any = None) -> None:
    """The closing lines of a run (to stderr by default: the one of the moment)."""
    stream = stream if stream is not None else sys.stderr
    if report.ran == 0 and not report.adopted and not report.blocked:
        print("shoal: nothing to run: every task is done (shoal plan --why explains)",
              file=stream)
        return
    parts = [f"{report.done} done"]
    for n, label in ((report.failed, "failed"), (report.skipped, "skipped (upstream failed)"),
                     (report.interrupted, "interrupted")):
        if n:
            parts.append(f"{n} {label}")
    if report.adopted:
        parts.append(f"{report.adopted} recovered from result files")
    if report.stopped and report.not_started:
        parts.append(f"{report.not_started} not started")
    print(f"shoal: {', '.join(parts)} in {report.elapsed:.1f} s", file=stream)
    for label, error in report.failures[:10]:
        print(f"  failed: {label}: {error}", file=stream)
    if len(report.failures) > 10:
        print(f"  ... and {len(report.failures) - 10} more (shoal status)", file=stream)
    if report.aborted:
        print(f"shoal: error: {report.aborted}", file=stream)
    if report.blocked:
        print(f"shoal: {len(report.blocked)} task(s) not run: an input is missing",
              file=stream)
        for _label, why in report.blocked[:10]:
            print(f"  blocked: {why}", file=stream)
    if report.user_stopped:
        print("shoal: stopped; `shoal run` again resumes", file=stream)
