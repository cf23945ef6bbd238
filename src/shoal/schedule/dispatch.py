"""Building task specs for dispatch: params, upstream folders and metrics (for ``ctx.input``
and a gather's ``runs``), the rendered command, resources, a dispatch token."""

from __future__ import annotations

import bisect
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.plan.build import DONE, Plan, StepPlan, task_inputs
from shoal.spec import around
from shoal.spec.template import RawField, fill_command
from shoal.state import resultfile
from shoal.state.store import Store
from shoal.worker import deferred, staging, wrap
from shoal.worker.taskspec import TaskSpec, gather_row


class SpecBuilder:
    """Makes the :class:`TaskSpec` of one attempt of a planned task."""

    def __init__(self, plan: Plan, store: Store, assigns_devices: bool,
                 flush: Callable[[], None], node_stage: bool = False) -> None:
        self.plan, self.store, self.flush = plan, store, flush
        self.exp = exp = plan.experiment
        self.assigns_devices = assigns_devices
        self.metrics: dict[str, dict[str, dict[str, Any]]] = {}
        self._root = str(plan.root)
        self._target = exp.target or str(exp.source)
        self._cwd = str(exp.source.parent if exp.source else Path.cwd())
        self._run_ids = {s.name: s.run_ids for s in plan.steps.values()}
        # staged archives unpack in node-local scratch on a cluster, in the root locally
        self.stage_dir = None if node_stage else f"{self._root}/.shoal/stage"
        self._stage: dict[str, list[str]] = {}
        self.run_id = resultfile.unique_id()  # this run (RUN_MARK in every task's env)
        self._old: dict[str, dict[str, Any]] = {}  # step -> key -> outputs it last had
        self._claims: list[str] | None = None  # every output of the plan, sorted

    def archives(self, sp: StepPlan) -> list[str]:
        """The step's ``stage=`` archives (the experiment's first), as absolute paths."""
        got = self._stage.get(sp.name)
        if got is None:
            folder = self.exp.source.parent if self.exp.source else None
            got = self._stage[sp.name] = staging.resolve(
                [*self.exp.stage, *sp.step.stage], folder, sp.name)
        return got

    def done(self, sp: StepPlan, i: int, metrics: dict[str, Any]) -> None:
        """A task finished in this run: its metrics, for the tasks that need it."""
        cache = self.metrics.get(sp.name)
        if cache is not None:  # else it is loaded from the store when first needed
            cache[sp.keys[i]] = metrics

    def upstream_metrics(self, up: StepPlan, j: int) -> dict[str, Any]:
        cache = self.metrics.get(up.name)
        if cache is None:
            self.flush()  # results of this run so far are in the store
            cache = {r.key: r.metrics or {} for r in self.store.records(up.name, "done")}
            for jj, doc in up.adopted.items():
                cache[up.keys[jj]] = doc.get("metrics") or {}
            self.metrics[up.name] = cache
        return cache.get(up.keys[j], {})

    def folder(self, sp: StepPlan, i: int) -> str:
        key = sp.keys[i]
        base = f"{self._root}/{sp.name}"
        return f"{base}/{key}" if key else base

    def build_deferred(self, sp: StepPlan, i: int, attempt: int, cpus: int) -> TaskSpec:
        """The spec of a task submitted before its upstream tasks ran (``--detach``): it
        names them, and the worker reads their results first (:mod:`shoal.worker.deferred`)."""
        spec = self.build(sp, i, attempt, cpus, [])
        spec.upstream = deferred.describe(sp.deps, i, StepPlan.param_dict, self.folder)
        spec.needs, spec.gather, spec.inputs = {}, None, None
        spec.allow_missing = bool(sp.step.allow_missing)
        return spec

    def build(self, sp: StepPlan, i: int, attempt: int, cpus: int, devices: list[str]) -> TaskSpec:
        """``cpus``: what the task's slot holds (all its processes')."""
        step = sp.step
        res = sp.resources(i)
        params = sp.param_dict(i)
        needs: dict[str, dict[str, Any]] = {}
        gather: dict[str, list[dict[str, Any]]] | None = None
        for d in sp.deps:
            up = d.up
            if d.many:
                rows = gather if gather is not None else {}
                multi = len([x for x in sp.deps if x.many]) > 1
                lst = rows.setdefault(up.name, [])
                for j in d.idx[i]:
                    if up.state[j] != DONE:  # allow_missing: only what succeeded
                        continue
                    lst.append(gather_row(up.param_dict(j), self.upstream_metrics(up, j),
                                          self.folder(up, j), up.name if multi else None))
                gather = rows
            else:
                j = d.idx[i]
                needs[up.name] = {"params": up.param_dict(j), "out": self.folder(up, j),
                                  "result": self.upstream_metrics(up, j)}
        out = self.folder(sp, i)
        exp = self.exp
        spec = TaskSpec(
            experiment=exp.name, target=self._target, config=exp.config,
            step=sp.name, key=sp.keys[i], params=params, fingerprint=sp.fps[i], code=sp.code,
            inputs=task_inputs(sp, i, self._run_ids), attempt=attempt, out=out,
            root=self._root, cwd=self._cwd,
            cpus=max(1, cpus // res.procs), gpus=res.gpus,
            devices=devices if self.assigns_devices else None,
            mem_mb=res.mem_mb, time_s=res.time_s,
            timeout_s=step.timeout_s, needs=needs, gather=gather,
            token=resultfile.unique_id(), stage=self.archives(sp), stage_dir=self.stage_dir,
            run_id=self.run_id, procs=res.procs, hang_timeout_s=step.hang_timeout_s,
            nodes=step.nodes,
        )
        if res.procs > 1:  # N copies, unless a command starts its own ranks ({procs})
            self_launched = step.command is not None and "{procs" in step.command
            spec.starts = 1 if self_launched else res.procs
        self._around(sp, i, spec, devices)
        if step.command is not None:
            values: dict[str, Any] = dict(spec.vars)
            values.update(params)
            values.update(out=out, threads=spec.cpus, device=spec.device, step=sp.name,
                          root=self._root, python=sys.executable,
                          gpus=",".join(map(str, devices)), procs=res.procs, nodes=step.nodes,
                          port=RawField('"$MASTER_PORT"'),
                          master_addr=RawField('"$MASTER_ADDR"'))
            values.update({name: u["out"] for name, u in needs.items()})
            values["staged"] = {staging.archive_name(a): RawField(
                f'"${staging.env_name(staging.archive_name(a))}"') for a in spec.stage}
            values.update(_file_fields("inputs", spec.in_files))
            if spec.outputs is not None:
                values.update(_file_fields("outputs", [
                    [n, [o]] for n, o in zip(spec.out_names or [], spec.outputs)]))
            spec.command, spec.argv = fill_command(sp.name, step.command, values,
                                                   f" for {spec.label}")
            self._wrap(sp, spec)
        return spec

    def _around(self, sp: StepPlan, i: int, spec: TaskSpec, devices: list[str]) -> None:
        """The task's files, vars, env, setup lines and metrics source (shoal.spec.around)."""
        a = self.exp.around(sp.step)
        files = sp.files
        if files is not None and files.inputs is not None:
            spec.in_files = [[name, [self._abs(p) for p in paths], glob]
                             for (name, paths), glob in zip(files.inputs[i], files.globs)]
            spec.files = files.digests_of(i)
        if files is not None and files.outputs is not None:
            spec.outputs = list(files.outputs[i])
            spec.out_names = list(files.output_names)
            spec.stale_outputs = self._stale(sp, i, spec.outputs) or None
        spec.vars = dict(a.vars)
        spec.setup = list(a.setup)
        if a.env or a.metrics is not None:
            values = {**a.vars, **spec.params, "out": spec.out, "root": self._root,
                      "step": sp.name, "threads": spec.cpus, "device": spec.device,
                      "gpus": ",".join(map(str, devices))}
            spec.user_env = {k: around.fill(t, values) for k, t in a.env.items()}
            m = a.metrics
            if m is not None and m.file is not None:
                spec.metrics = {"file": self._abs(around.fill(m.file, values))}
            elif m is not None:
                spec.metrics = {"patterns": [list(p) for p in m.patterns]}

    def _stale(self, sp: StepPlan, i: int, current: list[str]) -> list[str]:
        """What the task owned when it last ran that it does not own now (its outputs=
        changed), unless a task of the plan claims it, or a path in or around it."""
        old = self._old.get(sp.name)
        if old is None:
            old = self._old[sp.name] = self.store.column(sp.name, "outputs")
        before = old.get(sp.keys[i])
        if not before:
            return []
        if self._claims is None:
            self._claims = sorted({o for s in self.plan.steps.values() if s.files
                                   and s.files.outputs for outs in s.files.outputs
                                   for o in outs})
        return [p for p in before if p not in current and not _near(p, self._claims)]

    def _binds(self, spec: TaskSpec) -> list[str]:
        """The folders of the task's inputs and outputs that the container would not see
        (outside the experiment folder and the run root): mounted at the same paths."""
        paths = [*(p for _, ps, *_ in spec.in_files or () for p in ps), *(spec.outputs or ())]
        inside = (self._cwd.rstrip("/") + "/", self._root.rstrip("/") + "/")
        return list(dict.fromkeys(os.path.dirname(p) for p in paths
                                  if not p.startswith(inside)))

    def _abs(self, path: str) -> str:
        return os.path.normpath(os.path.join(self._cwd, path))

    def _wrap(self, sp: StepPlan, spec: TaskSpec) -> None:
        """A command's container and setup lines around it."""
        a = self.exp.around(sp.step)
        assert spec.command is not None
        if a.container is not None:
            name = f"shoal-{spec.token}"
            argv, runtime_env = wrap.container_argv(
                a.container, spec.command, cwd=self._cwd, root=self._root,
                env=spec.env(), gpus=spec.gpus > 0, name=name, extra_binds=self._binds(spec))
            spec.cleanup = wrap.remove_argv(a.container, name)
            spec.user_env = {**spec.user_env, **runtime_env}
            spec.command, spec.argv = shlex.join(argv), argv
        if a.setup:
            script = wrap.with_setup(a.setup, spec.command,
                                     spec.argv if a.container is not None else None)
            spec.command, spec.argv = script, [wrap.shell(), "-c", script]


def _near(path: str, claims: list[str]) -> bool:
    """Whether ``path`` is, holds or lies inside one of the sorted ``claims``."""
    k = bisect.bisect_left(claims, path)
    if k < len(claims) and claims[k] == path:
        return True
    inside = path.rstrip("/") + "/"
    k = bisect.bisect_left(claims, inside)
    if k < len(claims) and claims[k].startswith(inside):
        return True
    parent = os.path.dirname(path)
    while parent and parent != "/":
        k = bisect.bisect_left(claims, parent)
        if k < len(claims) and claims[k] == parent:
            return True
        parent = os.path.dirname(parent)
    return False


def _file_fields(what: str, entries: list[list[Any]] | None) -> dict[str, RawField]:
    """``{name}`` per named file and ``{inputs}``/``{outputs}`` for all: paths quoted."""
    if entries is None:
        return {}
    out: dict[str, RawField] = {}
    every: list[str] = []
    for name, paths, *_ in entries:
        every.extend(paths)
        if name:
            out[name] = RawField(" ".join(shlex.quote(p) for p in paths))
    out[what] = RawField(" ".join(shlex.quote(p) for p in every))
    return out

