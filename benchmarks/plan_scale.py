"""How long does ``shoal plan --json`` take on the seed-001 experiment at full size?

The experiment is the one from "Large, parallel deep learning experiments using Snakemake"
(Sadler et al.): 101 sites x 9 multi-task factors x 30 seeds, with a ``prep`` per site, then
``train``, ``predict`` and ``evaluate`` per site x factor x seed, and one ``combine`` gathering
everything: 101 + 3 x 27,270 + 1 = 81,912 tasks.

Targets, for the whole ``shoal plan --json`` process (start-up, import, expand, print):

* fresh (no run folder yet): < 1 s wall and < 300 MB peak RSS;
* with every task recorded done: < 1 s wall (and nothing left to run).

``--inputs`` adds a case with one input file per ``train`` task (27,270 files,
``inputs=["data/{site}/{factor}_{seed}.txt"]``): the plan time fresh (every file read), warm
(every task done, digests cached in the store: only stat calls), and right after touching 1 %
of the files (those are read again; their contents are the same, so nothing is to run).

Where Snakemake is installed (next to this Python, on PATH, or ``--snakemake PATH``), the same
workflow as a Snakefile (``plan_scale.smk``, beside this script) is timed with
``snakemake -n --quiet rules --cores 1`` in the same run, and the ratios are printed.

This is run by hand; it prints its figures and never asserts. Examples::

    python benchmarks/plan_scale.py                          # full size, 3 repeats of shoal
    python benchmarks/plan_scale.py --sites 3 --seeds 2      # a quick check of both sides
    python benchmarks/plan_scale.py --snakemake-only --snakemake /tmp/snakevenv/bin/snakemake

At full size Snakemake 9 takes minutes and over a gigabyte; ``--snakemake-repeat`` defaults
to 1. Peak RSS is the child's ``ru_maxrss`` from ``os.wait4`` (it includes any children it
waited for); 1 MB here is 10**6 bytes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FACTORS = [0, 1, 5, 10, 20, 40, 80, 160, 320]
FULL_SITES = 101
FULL_SEEDS = 30
WALL_TARGET_S = 1.0
RSS_TARGET_MB = 300.0
SNAKEFILE_TEMPLATE = Path(__file__).with_name("plan_scale.smk")

EXPERIMENT_TEMPLATE = '''\
"""The seed-001 experiment, written by benchmarks/plan_scale.py. Planning never runs a step."""

import shoal

SITES = [f"{{i:08d}}" for i in range(shoal.config("sites", {sites}))]
exp = shoal.Experiment(
    "streamflow",
    grid=shoal.Grid(
        site=SITES,
        factor={factors!r},
        seed=range(shoal.config("seeds", {seeds})),
    ),
)


@exp.step(per=["site"])
def prep(ctx, site): ...


@exp.step(per=["site", "factor", "seed"], needs=[prep], cpus=1, mem="2G", time="20m"{inputs})
def train(ctx, site, factor, seed): ...


@exp.step(per=["site", "factor", "seed"], needs=[train, prep])
def predict(ctx, site, factor, seed): ...


@exp.step(per=["site", "factor", "seed"], needs=[predict])
def evaluate(ctx, site, factor, seed): ...


@exp.gather(per=[], over=evaluate)
def combine(ctx, runs): ...
'''


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One finished child process: its wall time, peak RSS and what it printed."""

    wall_s: float
    rss_mb: float | None
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


def measure(cmd: Sequence[str], cwd: Path, timeout_s: float) -> Sample:
    """Run ``cmd`` once; wall clock from spawn to reap, peak RSS from the child's rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        timed_out = threading.Event()
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL)
        except OSError as exc:
            return Sample(wall_s=0.0, rss_mb=None, returncode=127, stdout="", stderr=str(exc))

        def _kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, _kill)
        timer.start()
        try:
            if hasattr(os, "wait4"):
                _, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - start
                proc.returncode = os.waitstatus_to_exitcode(status)
                # ru_maxrss: KiB on Linux, bytes on macOS.
                scale = 1 if sys.platform == "darwin" else 1024
                rss_mb: float | None = usage.ru_maxrss * scale / 1e6
            else:  # pragma: no cover - not Linux/macOS
                proc.wait()
                wall = time.perf_counter() - start
                rss_mb = None
        finally:
            timer.cancel()
        out.seek(0)
        err.seek(0)
        return Sample(
            wall_s=wall,
            rss_mb=rss_mb,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=timed_out.is_set(),
        )


def snapshot(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def reset(folder: Path, keep: set[str]) -> list[str]:
    """Remove whatever appeared in ``folder`` since ``keep`` was taken; return the names."""
    new = sorted(snapshot(folder) - keep)
    for name in new:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return new


def tail(text: str, lines: int = 15) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return textwrap.indent("\n".join(kept) if kept else "(no output)", "      | ")


@dataclass
class Series:
    """Repeated samples of one command, and what was read from its output."""

    label: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    total: int | None = None  # tasks (shoal) or jobs (snakemake)
    to_run: int | None = None  # shoal's "run" count

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.returncode == 0]

    @property
    def wall_median(self) -> float | None:
        return statistics.median(s.wall_s for s in self.ok) if self.ok else None

    @property
    def wall_min(self) -> float | None:
        return min(s.wall_s for s in self.ok) if self.ok else None

    @property
    def rss_max(self) -> float | None:
        values = [s.rss_mb for s in self.ok if s.rss_mb is not None]
        return max(values) if values else None


def failure(sample: Sample, what: str) -> str:
    why = "timed out" if sample.timed_out else f"exit status {sample.returncode}"
    return f"{what} failed ({why}):\n{tail(sample.stderr or sample.stdout)}"


# --------------------------------------------------------------------------- shoal


def find_shoal(explicit: str | None) -> list[str] | None:
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "shoal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    on_path = shutil.which("shoal")
    return [on_path] if on_path else None


def write_experiment(exp_dir: Path, sites: int, seeds: int, inputs: bool = False) -> Path:
    """Write ``experiment.py``; the sizes are the ``shoal.config`` defaults, so no flags.
    ``inputs``: each train task reads one file of ``data/`` (written here)."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    path = exp_dir / "experiment.py"
    line = ', inputs=["data/{site}/{factor}_{seed}.txt"]' if inputs else ""
    path.write_text(EXPERIMENT_TEMPLATE.format(sites=sites, seeds=seeds, factors=FACTORS,
                                               inputs=line))
    if inputs:
        for i in range(sites):
            folder = exp_dir / "data" / f"{i:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for factor in FACTORS:
                for seed in range(seeds):
                    (folder / f"{factor}_{seed}.txt").write_text(f"{i} {factor} {seed}\n" * 8)
    return path


def inputs_case(shoal: list[str], root: Path, args: argparse.Namespace) -> dict[str, str]:
    """The plan times with one input file per train task: fresh, warm, 1 % touched."""
    exp_dir = root / "with_inputs"
    write_experiment(exp_dir, args.sites, args.seeds, inputs=True)
    files = sorted((exp_dir / "data").rglob("*.txt"))
    time.sleep(2.1)  # (digests of files changed in the last 2 s are not kept: "racy")
    cmd = [*shoal, "plan", str(exp_dir), "--json"]
    print(f"shoal with {len(files):,} input files: $ {' '.join(cmd)}")
    out: dict[str, str] = {}
    fresh = plan_series("inputs, fresh", cmd, exp_dir, args.repeat, args.timeout, fresh=True)
    out["fresh"] = fmt_s(fresh.wall_median)
    seed_done_state(exp_dir)
    first = plan_series("inputs, done, first plan (hashes, caches)", cmd, exp_dir, 1,
                        args.timeout, fresh=False)
    out["first"] = fmt_s(first.wall_median)
    warm = plan_series("inputs, done, warm", cmd, exp_dir, args.repeat, args.timeout,
                       fresh=False)
    out["warm"] = fmt_s(warm.wall_median)
    out["warm_run"] = str(warm.to_run)
    touched = files[::100]  # 1 %
    for f in touched:
        os.utime(f)
    after = plan_series(f"inputs, {len(touched)} files touched", cmd, exp_dir, 1,
                        args.timeout, fresh=False)
    out["touched"] = fmt_s(after.wall_median)
    out["touched_n"] = f"{len(touched):,}"
    out["touched_run"] = str(after.to_run)
    return out


def seed_done_state(
    exp_dir: Path, metrics: Callable[[], dict[str, float]] | None = None
) -> int:
    """Record every task of the experiment in ``exp_dir`` as done in shoal's store.

    Afterwards ``shoal plan EXP_DIR --json`` must report ``"run": 0`` and take the path it
    takes for a finished experiment: each task's record carries its current fingerprint and
    its task folder exists (``runs/<step>/<dim>=<value>/...``), exactly as if ``shoal run``
    had completed every task, so plan reads the store rather than finding it empty. The
    experiment is imported with its defaults (the sizes this benchmark wrote into
    ``experiment.py``); no step body is run. It should write in bulk (one transaction), since
    at full size that is 81,912 tasks, and it is not part of what is timed. ``metrics``
    makes each task's metrics (default: one value). Returns the number of tasks.
    """
    import socket
    import time

    from shoal.plan.build import expand, task_inputs
    from shoal.spec.loader import load_experiment
    from shoal.state import resultfile
    from shoal.state.store import Store, TaskRecord

    exp = load_experiment(str(exp_dir))
    plans = expand(exp)
    run_ids: dict[str, list[str | None]] = {}
    records = []
    host, now = socket.gethostname(), time.time()
    for name, sp in plans.items():
        ids: list[str | None] = [resultfile.new_run_id() for _ in sp.keys]
        run_ids[name] = ids
        for i, key in enumerate(sp.keys):
            os.makedirs(exp.root / name / key, exist_ok=True)
            records.append(TaskRecord(
                name, key, "done", fp=sp.fps[i], code=sp.code,
                inputs=task_inputs(sp, i, run_ids), run_id=ids[i], params=sp.param_dict(i),
                attempts=1, started=now, ended=now + 1.0, duration=1.0, host=host,
                metrics=metrics() if metrics else {"val_rmse": 0.3},
            ))
    with Store.open(exp.root, create=True) as store:
        store.put(records)
    return len(records)


def plan_series(label: str, cmd: list[str], exp_dir: Path, repeat: int, timeout_s: float,
                fresh: bool) -> Series:
    """Run ``shoal plan --json`` ``repeat`` times; when ``fresh``, undo what each run wrote."""
    series = Series(label)
    keep = snapshot(exp_dir)
    for i in range(1, repeat + 1):
        sample = measure(cmd, exp_dir, timeout_s)
        series.samples.append(sample)
        left = reset(exp_dir, keep) if fresh else []
        if sample.returncode != 0:
            series.error = failure(sample, "shoal plan")
            print(f"  {label} {i}/{repeat}: {series.error}")
            break
        try:
            doc: Any = json.loads(sample.stdout)
            total, to_run = int(doc["total"]), int(doc["run"])
        except (ValueError, KeyError, TypeError) as exc:
            series.error = f"could not read shoal's JSON ({exc}):\n{tail(sample.stdout)}"
            sample.returncode = -1  # not a usable sample
            print(f"  {label} {i}/{repeat}: {series.error}")
            break
        series.total, series.to_run = total, to_run
        print(f"  {label} {i}/{repeat}: {sample.wall_s:.3f} s, {fmt_mb(sample.rss_mb)}, "
              f"total {total:,}, to run {to_run:,}")
        if i == 1:
            print(f"    steps: {describe_steps(doc.get('steps'))}")
            if left:
                print(f"    (plan left {', '.join(left)} in the experiment folder; removed "
                      "between fresh repeats)")
    return series


def describe_steps(steps: Any) -> str:
    if not isinstance(steps, dict):
        return json.dumps(steps)[:200]
    parts = []
    for name, value in steps.items():
        if isinstance(value, dict) and "total" in value:
            extra = f" (run {value['run']:,})" if isinstance(value.get("run"), int) else ""
            parts.append(f"{name} {value['total']:,}{extra}")
        elif isinstance(value, int):
            parts.append(f"{name} {value:,}")
        else:
            parts.append(f"{name} {json.dumps(value)[:60]}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- snakemake


def find_snakemake(explicit: str | None) -> list[str] | None:
    """How to run Snakemake: --snakemake PATH, beside this Python, the module, or PATH."""
    if explicit:
        return [explicit] if Path(explicit).exists() or shutil.which(explicit) else None
    beside = Path(sys.executable).parent / "snakemake"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    if importlib.util.find_spec("snakemake") is not None:
        return [sys.executable, "-m", "snakemake"]
    on_path = shutil.which("snakemake")
    return [on_path] if on_path else None


def tool_version(cmd: list[str]) -> str:
    """The first line a tool prints for ``--version``."""
    try:
        done = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (done.stdout.strip() or done.stderr.strip() or "unknown").splitlines()[0]


def write_snakefile(work: Path) -> None:
    """Copy the Snakefile and create its source inputs; every rule's output stays absent."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SNAKEFILE_TEMPLATE, work / "Snakefile")
    for name in ("obs_file.csv", "input_file.csv"):
        (work / name).write_text("")


def snakemake_series(cmd: list[str], work: Path, sites: int, seeds: int, repeat: int,
                     timeout_s: float) -> Series:
    # `--quiet` alone prints no job counts in Snakemake 8/9; `--quiet rules` keeps the table.
    argv = [*cmd, "-n", "--quiet", "rules", "--cores", "1"]
    if (sites, seeds) != (FULL_SITES, FULL_SEEDS):
        argv += ["--config", f"sites={sites}", f"seeds={seeds}"]
    series = Series("snakemake")
    keep = snapshot(work)
    print(f"  $ {' '.join(argv)}")
    for i in range(1, repeat + 1):
        sample = measure(argv, work, timeout_s)
        series.samples.append(sample)
        reset(work, keep)  # .snakemake/ metadata: every repeat starts as the first did
        if sample.returncode != 0:
            series.error = failure(sample, "snakemake -n")
            print(f"  snakemake {i}/{repeat}: {series.error}")
            break
        found = re.search(r"^total\s+(\d+)\s*$", sample.stdout + sample.stderr, re.M)
        series.total = int(found.group(1)) if found else None
        jobs = f"{series.total:,} jobs" if series.total is not None else "job count not found"
        print(f"  snakemake {i}/{repeat}: {sample.wall_s:.1f} s, {fmt_mb(sample.rss_mb)}, {jobs}")
    return series


# --------------------------------------------------------------------------- report


def fmt_mb(value: float | None) -> str:
    return "RSS n/a" if value is None else f"{value:,.0f} MB"


def fmt_s(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return ""
    return "ok" if value < limit else "OVER"


def line(what: str, figure: str, target: str = "", mark: str = "") -> None:
    print(f"  {what:<36} {figure:<38} {target:<10} {mark}".rstrip())


def report(args: argparse.Namespace, expected: int, fresh: Series | None, done: Series | None,
           done_note: str | None, snake: Series | None, snake_note: str | None) -> None:
    print()
    print(f"Summary ({args.sites} sites x {len(FACTORS)} factors x {args.seeds} seeds; "
          f"1 MB = 10**6 bytes)")
    if fresh is not None:
        n = len(fresh.ok)
        if fresh.error and not n:
            line("shoal plan --json, fresh", "failed (see above)")
        else:
            med = fresh.wall_median
            line("shoal plan --json, fresh: wall", f"{fmt_s(med)} median of {n} "
                 f"(min {fmt_s(fresh.wall_min)})", "< 1 s", verdict(med, WALL_TARGET_S))
            line("shoal plan --json, fresh: peak RSS", f"{fmt_mb(fresh.rss_max)} max of {n}",
                 "< 300 MB", verdict(fresh.rss_max, RSS_TARGET_MB))
            mark = "" if fresh.total is None else ("ok" if fresh.total == expected else "WRONG")
            line("shoal tasks", f"{fresh.total:,}" if fresh.total is not None else "n/a",
                 f"= {expected:,}", mark)
            if med is not None and fresh.total:
                line("shoal per task", f"{med / fresh.total * 1e6:.1f} us")
    if done_note is not None:
        line("shoal plan --json, all done", done_note)
    elif done is not None:
        n = len(done.ok)
        if done.error and not n:
            line("shoal plan --json, all done", "failed (see above)")
        else:
            med = done.wall_median
            line("shoal plan --json, all done: wall", f"{fmt_s(med)} median of {n} "
                 f"(min {fmt_s(done.wall_min)})", "< 1 s", verdict(med, WALL_TARGET_S))
            line("shoal plan --json, all done: RSS", f"{fmt_mb(done.rss_max)} max of {n}")
            mark = "" if done.to_run is None else ("ok" if done.to_run == 0 else "NOT 0")
            line("shoal plan --json, all done: run",
                 f"{done.to_run:,}" if done.to_run is not None else "n/a", "= 0", mark)
    if snake_note is not None:
        line("snakemake", snake_note)
    elif snake is not None:
        n = len(snake.ok)
        if snake.error and not n:
            line("snakemake -n --quiet rules", "failed (see above)")
        else:
            med = snake.wall_median
            per_job = ""
            if med is not None and snake.total:
                per_job = f" ({med / snake.total * 1e3:.2f} ms/job)"
            line("snakemake -n: wall", f"{fmt_s(med)} median of {n}{per_job}")
            line("snakemake -n: peak RSS", f"{fmt_mb(snake.rss_max)} max of {n}")
            mark = "" if snake.total is None else ("ok" if snake.total == expected + 1 else "WRONG")
            line("snakemake jobs (with `all`)",
                 f"{snake.total:,}" if snake.total is not None else "n/a",
                 f"= {expected + 1:,}", mark)
            if fresh is not None and fresh.ok:
                wall = ratio(snake.wall_median, fresh.wall_median)
                rss = ratio(snake.rss_max, fresh.rss_max)
                line("snakemake / shoal (fresh)", f"wall {wall}, peak RSS {rss}")


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "n/a"
    return f"{a / b:,.1f}x"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=3, help="runs of shoal plan per case (3)")
    p.add_argument("--snakemake-repeat", type=int, default=1,
                   help="runs of snakemake -n (1; minutes each at full size)")
    p.add_argument("--sites", type=int, default=FULL_SITES, help="sites (101)")
    p.add_argument("--seeds", type=int, default=FULL_SEEDS, help="seeds (30)")
    p.add_argument("--shoal", metavar="PATH", help="the shoal executable to time")
    p.add_argument("--snakemake", metavar="PATH", help="the snakemake executable to time")
    side = p.add_mutually_exclusive_group()
    side.add_argument("--shoal-only", action="store_true", help="skip Snakemake")
    side.add_argument("--snakemake-only", action="store_true", help="skip shoal")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds before one run is killed (1800)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--inputs", action="store_true", help="also time the grid with one "
                   "input file per train task (fresh, warm, 1 %% touched)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.snakemake_repeat < 1 or args.sites < 1 or args.seeds < 1:
        p.error("--repeat, --snakemake-repeat, --sites and --seeds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = args.sites * len(FACTORS) * args.seeds
    expected = args.sites + 3 * runs + 1
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"plan_scale: {args.sites} sites x {len(FACTORS)} factors x {args.seeds} seeds = "
          f"{runs:,} runs; prep, train, predict, evaluate, combine = {expected:,} tasks")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}")

    root = Path(tempfile.mkdtemp(prefix="shoal-plan-scale-"))
    fresh = done = snake = None
    done_note = snake_note = None
    with_inputs: dict[str, str] | None = None
    try:
        if not args.snakemake_only:
            print()
            shoal = find_shoal(args.shoal)
            if shoal is None:
                print("shoal: not found next to this Python or on PATH (pip install -e . or "
                      "--shoal PATH)")
                fresh = Series("fresh", error="shoal not found")
            else:
                exp_dir = root / "streamflow"
                write_experiment(exp_dir, args.sites, args.seeds)
                cmd = [*shoal, "plan", str(exp_dir), "--json"]
                print(f"shoal: $ {' '.join(cmd)}")
                fresh = plan_series("fresh", cmd, exp_dir, args.repeat, args.timeout, fresh=True)
                if fresh.ok:
                    try:
                        seed_done_state(exp_dir)
                    except NotImplementedError:
                        done_note = "skipped (not available)"
                        print("done-state case: skipped (not available)")
                    else:
                        done = plan_series("all done", cmd, exp_dir, args.repeat, args.timeout,
                                           fresh=False)
                else:
                    done_note = "skipped (the fresh case failed)"
                if args.inputs:
                    print()
                    with_inputs = inputs_case(shoal, root, args)

        if not args.shoal_only:
            print()
            snakemake = find_snakemake(args.snakemake)
            if snakemake is None:
                snake_note = "not installed (pip install snakemake to compare)"
                print(f"snakemake: {snake_note}")
            else:
                print(f"snakemake {tool_version(snakemake)}: {' '.join(snakemake)}")
                work = root / "snakemake"
                write_snakefile(work)
                snake = snakemake_series(snakemake, work, args.sites, args.seeds,
                                         args.snakemake_repeat, args.timeout)
    finally:
        if args.keep:
            print(f"\n(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)

    report(args, expected, fresh, done, done_note, snake, snake_note)
    if with_inputs is not None:
        w = with_inputs
        line("inputs: fresh (every file read)", w["fresh"], "< 1 s")
        line("inputs: all done, first plan (reads, caches)", w["first"])
        line("inputs: all done, warm (stat only)", f"{w['warm']}, to run {w['warm_run']}",
             "< 1 s")
        line(f"inputs: after touching {w['touched_n']} files", f"{w['touched']}, to run "
             f"{w['touched_run']}", "< 1 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
