"""``shoal tune EXP STEP``: how many threads per task, and how many tasks at once, give the
most tasks per hour on this machine — seed 002's hand-made ``OMP_NUM_THREADS`` table,
measured for the whole grid's throughput rather than one task's speed.

A sample of the step's tasks (whose upstream tasks are done) runs at each candidate setting:
``t`` threads per task (1, 2, 4, … up to the cores) × ``cores // t`` tasks at once, so each
setting fills the machine. Each setting runs in fresh worker processes; a task's time is
what its worker measured (started → ended: the experiment's import is not in it);
throughput = tasks at once × 3600 / mean task time. Peak memory per task is the high-water
mark of its worker process (function steps). The sampled tasks run in a scratch folder under
``.shoal/tune``, removed afterwards: their results never count as the tasks' results.
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import ShoalError
from shoal.plan.build import DONE, build_plan
from shoal.schedule.dispatch import SpecBuilder
from shoal.schedule.slots import detect_cpus
from shoal.spec.experiment import Experiment
from shoal.state.status import TaskStatus
from shoal.state.store import Store


@dataclass
class Setting:
    """One candidate: threads per task × tasks at once, and what it measured."""

    threads: int
    at_once: int
    durations: list[list[float]] = field(default_factory=list)  # per repeat, per task
    peak_mb: float | None = None
    failed: str | None = None

    def per_hour(self, durations: list[float]) -> float:
        return self.at_once * 3600.0 / max(statistics.fmean(durations), 1e-9)

    @property
    def rates(self) -> list[float]:
        return [self.per_hour(d) for d in self.durations if d]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


def candidates(cores: int, threads: list[int] | None = None) -> list[tuple[int, int]]:
    """(threads, tasks at once) that fill ``cores``: 1, 2, 4… threads, and all the cores."""
    ts = sorted(set(threads)) if threads else sorted(
        {t for t in (1, 2, 4, 8, 16, 32, 64, 128) if t <= cores} | {cores})
    return [(t, max(1, cores // t)) for t in ts]


def tune(exp: Experiment, step: str, *, sample: int | None = None, repeats: int = 2,
         threads: list[int] | None = None, cores: int | None = None,
         say: Callable[[str], None] = print) -> list[Setting]:
    """Measure each candidate setting on a sample of ``step``'s tasks; best first."""
    from shoal.backends.local.backend import LocalBackend

    exp.validate()
    if step not in exp.steps:
        raise ShoalError(f"shoal tune: no step '{step}' in '{exp.name}' (steps: "
                         f"{', '.join(exp.steps)})")
    s = exp.steps[step]
    if s.pack or s.procs > 1 or s.resource_dims or exp.around(s).outputs is not None:
        raise ShoalError(
            f"shoal tune: step '{step}' sets pack=, procs=, outputs= or resources from a "
            "dimension; tune measures one-process tasks that write only their own folder")
    cores = cores or detect_cpus()
    settings = [Setting(t, j) for t, j in candidates(cores, threads)]
    with Store.open(exp.root) as store:
        plan = build_plan(exp, root=exp.root, store=store, missing_inputs="skip")
        sp = plan.steps[step]
        ready = [i for i in range(len(sp.keys))
                 if all(up.state[j] == DONE for up, j in sp.upstream(i))]
        if not ready:
            raise ShoalError(f"shoal tune: no task of '{step}' has its upstream tasks done; "
                             f"run the steps it needs first (shoal run {exp.source or ''})")
        n = sample or max(4, 2 * max(j for _, j in candidates(cores, threads)))
        picked = ready[:: max(1, len(ready) // n)][:n]
        builder = SpecBuilder(plan, store, True, lambda: None)
        scratch = Path(exp.root) / ".shoal" / "tune" / str(os.getpid())
        say(f"shoal tune: {len(picked)} task(s) of '{step}' per setting, {repeats} "
            f"repeat(s), {cores} cores")
        try:
            for rep in range(repeats):
                for st in settings:
                    if st.failed is None:
                        _measure(st, sp, picked, builder, scratch / f"{st.threads}-{rep}",
                                 LocalBackend, exp)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return sorted(settings, key=lambda st: -st.rate)


def _measure(st: Setting, sp: Any, picked: list[int], builder: SpecBuilder, folder: Path,
             backend: Any, exp: Experiment) -> None:
    specs = []
    for i in picked:
        spec = builder.build(sp, i, 1, st.threads, [])
        key = sp.keys[i] or "task"
        spec.out, spec.root = str(folder / key), str(folder)
        spec.outputs = spec.stale_outputs = None
        specs.append(spec)
    be = backend(target=exp.target or str(exp.source), config=dict(exp.config),
                 cwd=str(exp.source.parent if exp.source else Path.cwd()),
                 max_workers=st.at_once)
    durations: list[float] = []
    queue, running = list(specs), 0
    try:
        while queue or running:
            while queue and running < st.at_once:
                be.start([queue.pop(0)])
                running += 1
            for o in be.poll(0.2):
                running -= 1
                if o.status != TaskStatus.DONE:
                    st.failed = f"{o.step}[{o.key}]: {o.error}"
                    return
                doc = o.doc or {}
                durations.append(float(doc.get("ended", 0) - doc.get("started", 0)))
        st.peak_mb = max([_peak_mb(w.proc.pid) for w in be.workers] or [0.0]) or None
    finally:
        be.shutdown()
    st.durations.append(durations)


def _peak_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), MB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


HEADER = ["threads", "at once", "tasks/h", "spread", "s/task", "peak MB/task"]


def table(settings: list[Setting]) -> list[list[str]]:
    """Rows of the printed table (:data:`HEADER`), best first."""
    rows = []
    for st in settings:
        if st.failed:
            rows.append([str(st.threads), str(st.at_once), "failed", "", "", st.failed[:60]])
            continue
        rates = st.rates
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else ""
        per_task = statistics.fmean([d for ds in st.durations for d in ds])
        rows.append([str(st.threads), str(st.at_once), f"{st.rate:,.0f}", spread,
                     f"{per_task:.2f}", f"{st.peak_mb:,.0f}" if st.peak_mb else "n/a"])
    return rows


def best(settings: list[Setting]) -> Setting | None:
    """The setting with the most tasks per hour (None: none ran every sampled task)."""
    ok = [st for st in settings if not st.failed and st.rate > 0]
    return ok[0] if ok else None


def advice(step: str, settings: list[Setting]) -> str:
    """The recommendation in words."""
    top = best(settings)
    if top is None:
        return "no setting ran every sampled task: see the failures above"
    worst = [st for st in settings if not st.failed and st.rate > 0][-1]
    ratio = top.rate / worst.rate if worst.rate else float("inf")
    tasks = f"{top.at_once} task{'s' if top.at_once > 1 else ''}"
    return (f"recommend: cpus={top.threads} on step '{step}' and "
            f"-j {top.threads * top.at_once} ({tasks} at once): {top.rate:,.0f} tasks/h, "
            f"{ratio:.2f}x the slowest setting ({worst.threads} thread(s) x {worst.at_once})")


def on_slurm_node(exp: Experiment, args: Any, options: Any) -> int:
    """``shoal tune --backend slurm``: the same measurement on one whole node of the
    cluster, through ``srun --nodes=1 --exclusive`` (its output streams here)."""
    import shutil as sh
    import subprocess
    import sys

    if sh.which("srun") is None:
        raise ShoalError("shoal tune --backend slurm: srun is not on PATH; run on a "
                         "cluster's login node")
    o = options.for_step(args.step)
    flags = [f"--{k}={v}" for k, v in (("partition", o.partition), ("account", o.account),
                                       ("qos", o.qos)) if v]
    inner = [sys.executable, "-m", "shoal.cli.main", "tune", str(exp.source or args.experiment),
             args.step, "--root", str(exp.root), "--repeats", str(args.repeats)]
    for flag, value in (("--sample", args.sample), ("--threads", args.threads),
                        ("-j", args.jobs), ("--write-profile", args.write_profile)):
        if value:
            inner += [flag, str(value)]
    if args.config:
        inner += ["--config", *args.config]
    if args.config_file:
        inner += ["--config-file", args.config_file]
    cmd = ["srun", "--nodes=1", "--ntasks=1", "--exclusive", "--cpu-bind=none",
           f"--job-name=shoal-tune-{exp.name}", *flags, *o.extra, *inner]
    print(f"shoal tune: on one Slurm node: {' '.join(cmd[:6 + len(flags)])} ...",
          file=sys.stderr)
    return subprocess.run(cmd, cwd=str(exp.source.parent) if exp.source else None,
                          check=False).returncode
