"""Task throughput of ``shoal run -j 2`` on 2 cores, against xargs, Snakemake and an array job.

Everything is measured in one run, each case as a whole process timed from spawn to exit:

* ``--n`` (2,000) trivial function tasks (``@exp.step`` returning ``{"i": i}``) and ``--n``
  trivial command tasks (``exp.command("c", "true")``) under ``shoal run -j 2 --progress
  none``, each twice: with the run root on disk (under ``--workdir``, default the temp dir)
  and on tmpfs (``/dev/shm``, where it exists), a fresh root for each measurement; on a
  disk where creating a file costs ~0.3 ms, the root's file system weighs a lot (a probe
  prints that cost first: ext4 without a journal allocates inodes several times slower
  within ~40 s of many deletions, so run this on a quiet disk, not right after the tests);
* ``seq N | xargs -P 2 -I{} true``: the same commands with nothing recorded;
* these task-rate cases ``--rounds`` times (3), one after the other in each round; the
  summary gives the median round (a shared VM's timings vary by 10-20 % from run to run),
  and the shoal/xargs ratio of each round with its median; shoal's modules are
  byte-compiled first, as an installed package's are;
* where Snakemake is installed (``--snakemake PATH``, next to this Python, or on PATH): a
  Snakefile with one rule ``out/{i}.txt`` (``shell: "true && touch {output}"``) for the
  same ``--n`` targets, ``snakemake --cores 2 --quiet all``, run in a folder on disk;
* 30 trainings of the streamflow LSTM (``examples/streamflow``): (a) 30 separate
  ``python train.py --site 01022500 --factor 1 --seed K --out DIR/K`` processes run 2 at a
  time, as a Slurm array with 2 slots would; (b) ``shoal run examples/streamflow -j 2
  --config sites=1 'factors=[1]' seeds=30``, which also runs ``prep`` once, ``evaluate``
  after each training and one ``combine`` (62 tasks). Each training is ~2.5 s of CPU plus,
  as a separate process, ~3 s of start-up (importing torch), so (a) takes 1.5-2 minutes.

Targets: >= 1,000 function tasks/s; trivial command tasks >= 0.35 x xargs's rate (commands
start with the standard library's ``os.posix_spawn``, which holds the GIL until the child
has exec'ed; commands that take seconds do not notice). The LSTM ratio (a) / (b) is printed
without a target (> 1: shoal is faster).

This is run by hand; it prints its figures and never asserts. Examples::

    python benchmarks/local_throughput.py                  # everything, N = 2,000
    python benchmarks/local_throughput.py --skip-lstm      # the task rates only (~1 minute)
    python benchmarks/local_throughput.py --skip-lstm --rounds 7
    python benchmarks/local_throughput.py --quick          # N = 200, 4 trainings
    python benchmarks/local_throughput.py --snakemake /tmp/snakevenv/bin/snakemake
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_scale import find_snakemake, tool_version

FN_TARGET = 1000.0  # function tasks per second
XARGS_RATIO_TARGET = 0.35  # shoal command tasks / xargs, per second
REPO = Path(__file__).resolve().parent.parent
STREAMFLOW = REPO / "examples" / "streamflow"
LSTM_SITE = "01022500"
LSTM_FACTOR = 1
TMPFS = Path("/dev/shm")

FN_EXPERIMENT = '''\
"""Trivial function tasks, written by benchmarks/local_throughput.py."""

import shoal

exp = shoal.Experiment("fn", grid=shoal.Grid(i=range({n})))


@exp.step(per=["i"])
def f(ctx, i):
    return {{"i": i}}
'''

CMD_EXPERIMENT = '''\
"""Trivial command tasks, written by benchmarks/local_throughput.py."""

import shoal

exp = shoal.Experiment("cmd", grid=shoal.Grid(i=range({n})))
exp.command("c", "true", per=["i"])
'''

SNAKEFILE = '''\
# Trivial command jobs, written by benchmarks/local_throughput.py.
N = {n}

rule all:
    input: expand("out/{{i}}.txt", i=range(N))

rule t:
    output: "out/{{i}}.txt"
    shell: "true && touch {{output}}"
'''


# --------------------------------------------------------------------------- measuring


@dataclass
class Timed:
    """One finished command: wall clock from spawn to exit, and what it printed."""

    label: str
    wall_s: float
    returncode: int
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    tasks: int | None = None  # tasks it did, where that could be read or counted
    expected: int | None = None
    cpu_s: float | None = None  # user + system CPU of the process tree (reaped children)
    steal: float | None = None  # share of the machine's CPU time its hypervisor took

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def rate(self) -> float | None:
        if not self.ok or self.wall_s <= 0 or self.expected is None:
            return None
        return self.expected / self.wall_s

    def problem(self) -> str | None:
        if self.timed_out:
            return "timed out"
        if self.returncode != 0:
            return f"exit status {self.returncode}"
        if self.expected is not None and self.tasks is not None and self.tasks != self.expected:
            return f"{self.tasks:,} of {self.expected:,} tasks done"
        return None


def timed(label: str, cmd: Sequence[str] | str, cwd: Path, timeout_s: float,
          shell: bool = False) -> Timed:
    """Run ``cmd`` once; wall clock with ``time.perf_counter`` around ``subprocess.run``."""
    argv: Sequence[str] | str = cmd if shell else list(cmd)
    cpu0 = children_cpu()
    stat0 = cpu_times()
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, shell=shell,
                              stdin=subprocess.DEVNULL, timeout=timeout_s, errors="replace")
    except subprocess.TimeoutExpired as exc:
        return Timed(label, time.perf_counter() - start, -9, _text(exc.stdout),
                     _text(exc.stderr), timed_out=True)
    except OSError as exc:
        return Timed(label, 0.0, 127, "", str(exc))
    wall = time.perf_counter() - start
    return Timed(label, wall, done.returncode, done.stdout, done.stderr,
                 cpu_s=children_cpu() - cpu0, steal=steal_share(stat0, cpu_times()))


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (``/proc/stat``: user nice system idle iowait irq
    softirq steal …), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """How much of the CPU time between two readings the hypervisor gave to other machines
    (on a shared VM, a high share makes every figure of that measurement slower)."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta[:8])
    return delta[7] / total if total > 0 else None


def children_cpu() -> float:
    """User + system seconds of all reaped children so far (only whole-run deltas are used:
    measurements that overlap in time, like the array's processes, share one delta)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def tail(text: str, lines: int = 12) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return textwrap.indent("\n".join(kept) if kept else "(no output)", "      | ")


def show(t: Timed, extra: str = "", rate: bool = True) -> None:
    """One progress line for a finished measurement (and its output if it went wrong)."""
    per_s = f", {t.rate:,.0f} tasks/s" if rate and t.rate is not None else ""
    cpu = f", cpu {t.cpu_s:.2f} s" if t.cpu_s is not None else ""
    steal = f", steal {t.steal:.0%}" if t.steal is not None and t.steal >= 0.05 else ""
    print(f"  {t.label}: {t.wall_s:.2f} s{per_s}{cpu}{steal}{extra}")
    why = t.problem()
    if why:
        print(f"    PROBLEM: {why}\n{tail(t.stderr or t.stdout)}")


def shoal_done(t: Timed) -> int | None:
    """The ``N done`` count from shoal run's closing line (on stderr)."""
    found = re.search(r"^shoal: ([\d,]+) done", t.stderr, re.M)
    return int(found.group(1).replace(",", "")) if found else None


def disk_probe(work: Path, n: int = 300) -> str:
    """The CPU cost of making a task-like folder with a file in it on the disk folder (kept
    until the end: deleting would slow what follows). ext4 without a journal skips recently
    freed inodes when it allocates, so within ~40 s of many deletions (a test run, another
    benchmark) this costs several times more, and the disk figures fall with it."""
    base = fresh_dir(work, "probe-")
    t = time.process_time()
    for i in range(n):
        os.mkdir(base / f"i={i}")
        fd = os.open(base / f"i={i}" / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    us = (time.process_time() - t) / n * 1e6
    note = (" (slow: the file system is busy, or freed many inodes in the last minute; "
            "the disk figures will be low)" if us > 150 else "")
    return f"disk probe: a folder with a file in it costs {us:.0f} us of CPU{note}"


def fresh_dir(parent: Path, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


# --------------------------------------------------------------------------- finding tools


def byte_compile() -> str:
    """Byte-compile shoal's modules, as ``pip install`` does for an installed package: an
    editable install under ``PYTHONDONTWRITEBYTECODE=1`` (set on some machines) would
    otherwise compile them from source in every ``shoal`` process (~50 ms each)."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("shoal")
    if spec is None or not spec.submodule_search_locations:
        return "(shoal is not importable here: its modules were not byte-compiled first)"
    folder = next(iter(spec.submodule_search_locations))
    ok = compileall.compile_dir(folder, quiet=1)
    return f"byte-compiled shoal's modules in {folder}" + ("" if ok else " (with errors)")


def find_shoal(explicit: str | None) -> list[str] | None:
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "shoal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    on_path = shutil.which("shoal")
    return [on_path] if on_path else None


def run_shoal_tasks(label: str, shoal: list[str], exp_file: Path, root: Path, n: int,
                    jobs: int, timeout_s: float) -> Timed:
    cmd = [*shoal, "run", str(exp_file), "-j", str(jobs), "--progress", "none",
           "--root", str(root)]
    t = timed(label, cmd, exp_file.parent, timeout_s)
    t.expected, t.tasks = n, shoal_done(t)
    show(t)
    return t


def run_xargs(n: int, jobs: int, cwd: Path, timeout_s: float) -> Timed:
    line = f"seq {n} | xargs -P {jobs} -I{{}} true"
    t = timed(f"xargs ($ {line})", line, cwd, timeout_s, shell=True)
    t.expected = n
    show(t)
    return t


def run_snakemake(snakemake: list[str], work: Path, n: int, jobs: int, timeout_s: float) -> Timed:
    work.mkdir(parents=True, exist_ok=True)
    (work / "Snakefile").write_text(SNAKEFILE.format(n=n))
    # Snakemake 9: `--quiet` takes optional values; `--quiet all` silences the job log.
    cmd = [*snakemake, "--snakefile", "Snakefile", "--cores", str(jobs), "--quiet", "all"]
    print(f"  $ {shlex.join(cmd)}  (in {work}, on disk)")
    t = timed("snakemake", cmd, work, timeout_s)
    t.expected = n
    out = work / "out"
    t.tasks = sum(1 for _ in out.iterdir()) if out.is_dir() else 0
    show(t)
    return t


def run_array(python: str, work: Path, trainings: int, jobs: int, timeout_s: float) -> Timed:
    """``trainings`` separate ``train.py`` processes, ``jobs`` at a time (an array job)."""
    script = STREAMFLOW / "train.py"
    per: list[Timed] = []

    def one(seed: int) -> Timed:
        cmd = [python, str(script), "--site", LSTM_SITE, "--factor", str(LSTM_FACTOR),
               "--seed", str(seed), "--out", str(work / str(seed))]
        return timed(f"train.py seed {seed}", cmd, REPO, timeout_s)

    print(f"  $ {python} {script.relative_to(REPO)} --site {LSTM_SITE} --factor "
          f"{LSTM_FACTOR} --seed K --out {work}/K   (K = 0..{trainings - 1}, {jobs} at a time)")
    cpu0 = children_cpu()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        per = list(pool.map(one, range(trainings)))
    wall = time.perf_counter() - start
    cpu = children_cpu() - cpu0
    failed = [p for p in per if not p.ok]
    t = Timed("array", wall, failed[0].returncode if failed else 0,
              stderr=failed[0].stderr if failed else "", timed_out=any(p.timed_out for p in per),
              tasks=len(per) - len(failed), expected=trainings, cpu_s=cpu)
    mean = statistics.mean(p.wall_s for p in per) if per else 0.0
    show(t, f" ({len(per) - len(failed)} of {trainings} ok; {mean:.2f} s per process on "
            "average, start-up included)", rate=False)
    return t


def run_shoal_lstm(shoal: list[str], root: Path, trainings: int, jobs: int,
                   timeout_s: float) -> Timed:
    cmd = [*shoal, "run", str(STREAMFLOW), "-j", str(jobs), "--progress", "none",
           "--root", str(root), "--config", "sites=1", f"factors=[{LSTM_FACTOR}]",
           f"seeds={trainings}"]
    print(f"  $ {shlex.join(cmd)}")
    t = timed("shoal", cmd, REPO, timeout_s)
    t.expected, t.tasks = 2 * trainings + 2, shoal_done(t)
    show(t, f" (prep 1, train {trainings}, evaluate {trainings}, combine 1 = "
            f"{t.expected} tasks; shoal reports {t.tasks if t.tasks is not None else '?'} done)",
         rate=False)
    return t


# --------------------------------------------------------------------------- report


def line(what: str, figure: str, target: str = "", mark: str = "") -> None:
    print(f"  {what:<40} {figure:<34} {target:<10} {mark}".rstrip())


def fmt_rate(t: Timed | None) -> str:
    if t is None:
        return "n/a"
    if t.rate is None:
        return f"failed ({t.problem()})"
    note = f"; {t.problem()}" if t.problem() else ""
    cpu = f", cpu {t.cpu_s:.1f} s" if t.cpu_s is not None else ""
    return f"{t.rate:,.0f}/s ({t.wall_s:.2f} s{cpu}{note})"


def at_least(value: float | None, limit: float) -> str:
    if value is None:
        return ""
    return "ok" if value >= limit else "UNDER"


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def middle(ts: list[Timed]) -> Timed | None:
    """The round with the median rate (a failed round counts as the slowest)."""
    if not ts:
        return None
    ranked = sorted(ts, key=lambda t: t.rate if t.rate is not None else -1.0)
    return ranked[(len(ranked) - 1) // 2]


def spread(values: list[float | None]) -> str:
    """``median (min-max over R rounds)`` of per-round figures."""
    ok = [v for v in values if v is not None]
    if not ok:
        return "n/a"
    if len(ok) == 1:
        return f"{ok[0]:.2f}"
    return f"{statistics.median(ok):.2f} ({min(ok):.2f}-{max(ok):.2f} over {len(ok)} rounds)"


def report(args: argparse.Namespace, fn: dict[str, list[Timed]],
           cmd: dict[str, list[Timed]], xargs: list[Timed], snake: Timed | None,
           snake_note: str | None, array: Timed | None, lstm: Timed | None,
           lstm_note: str | None) -> None:
    print()
    print(f"Summary (N = {args.n:,} tasks per case, -j {args.jobs}; rates are N / wall of the "
          f"whole process, spawn to exit; the median round of {args.rounds})")
    for where, ts in fn.items():
        t = middle(ts)
        line(f"shoal function tasks ({where})", fmt_rate(t), f">= {FN_TARGET:,.0f}/s",
             at_least(t.rate if t else None, FN_TARGET))
    for where, ts in cmd.items():
        line(f"shoal command tasks ({where})", fmt_rate(middle(ts)))
    x = middle(xargs)
    line(f"xargs -P {args.jobs} true", fmt_rate(x))
    for where, ts in cmd.items():  # per round: shoal and xargs ran minutes apart at most
        ratios = [div(t.rate, xr.rate) for t, xr in zip(ts, xargs)]
        ok = [r for r in ratios if r is not None]
        med = statistics.median(ok) if ok else None
        line(f"shoal commands / xargs ({where})", spread(ratios),
             f">= {XARGS_RATIO_TARGET}", at_least(med, XARGS_RATIO_TARGET))
    if snake_note is not None:
        line("snakemake", snake_note)
    elif snake is not None:
        line(f"snakemake --cores {args.jobs} (disk)", fmt_rate(snake))
        for where, ts in cmd.items():
            t = middle(ts)
            r = div(t.rate if t else None, snake.rate)
            line(f"shoal commands / snakemake ({where})", "n/a" if r is None else f"{r:.1f}x")
    if lstm_note is not None:
        line("streamflow LSTM", lstm_note)
    else:
        n = args.trainings
        if array is not None:
            line(f"LSTM: {n} x train.py, {args.jobs} at a time", f"{array.wall_s:.1f} s"
                 + (f" ({array.problem()})" if array.problem() else "")
                 + (f", cpu {array.cpu_s:.1f} s" if array.cpu_s is not None else ""))
        if lstm is not None:
            line(f"LSTM: shoal run ({2 * n + 2} tasks)", f"{lstm.wall_s:.1f} s"
                 + (f" ({lstm.problem()})" if lstm.problem() else "")
                 + (f", cpu {lstm.cpu_s:.1f} s" if lstm.cpu_s is not None else "")
                 + f" (with prep, {n} evaluate, combine)")
        ok = array is not None and lstm is not None and array.ok and lstm.ok
        r = div(array.wall_s, lstm.wall_s) if ok and array and lstm else None
        line("LSTM: array wall / shoal wall", "n/a" if r is None else f"{r:.2f}x",
             "(> 1: shoal faster)")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, help="trivial tasks per case (2000; --quick: 200)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="parallel slots everywhere (2)")
    p.add_argument("--trainings", type=int, help="streamflow trainings (30; --quick: 4)")
    p.add_argument("--quick", action="store_true", help="a quick check: smaller defaults for "
                   "--n and --trainings")
    p.add_argument("--skip-lstm", action="store_true", help="skip the streamflow comparison")
    p.add_argument("--skip-snakemake", action="store_true", help="skip Snakemake")
    p.add_argument("--shoal", metavar="PATH", help="the shoal executable to time")
    p.add_argument("--snakemake", metavar="PATH", help="the snakemake executable to time")
    p.add_argument("--python", metavar="PATH", default=sys.executable,
                   help="the Python (with torch) that runs train.py (this one)")
    p.add_argument("--workdir", metavar="DIR", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the on-disk folders go (the temp dir)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds before one command is killed (1800)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the task-rate cases; "
                   "each round runs every case once, and the summary gives medians (3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 200 if args.quick else 2000
    if args.trainings is None:
        args.trainings = 4 if args.quick else 30
    if args.n < 1 or args.jobs < 1 or args.trainings < 1 or args.rounds < 1:
        p.error("--n, --jobs, --trainings and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load = loadavg()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(f"local_throughput: {args.n:,} function tasks, {args.n:,} command tasks, xargs, "
          f"snakemake; {args.trainings} LSTM trainings; -j {args.jobs}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
          + (f" ({usable} usable)" if usable is not None else "")
          + f", load average {load} at start")

    args.workdir.mkdir(parents=True, exist_ok=True)
    work = fresh_dir(args.workdir, "shoal-local-throughput-")
    tmpfs = fresh_dir(TMPFS, "shoal-local-throughput-") if TMPFS.is_dir() else None
    roots = {"disk": work}
    if tmpfs is not None:
        roots["tmpfs"] = tmpfs
    print(f"disk folder: {work}; tmpfs folder: {tmpfs or 'none (no /dev/shm)'}")
    print(disk_probe(work))

    fn: dict[str, list[Timed]] = {}  # per round
    cmd: dict[str, list[Timed]] = {}
    xargs: list[Timed] = []
    snake = array = lstm = None
    snake_note = lstm_note = None
    try:
        shoal = find_shoal(args.shoal)
        print()
        if shoal is None:
            print("shoal: not found next to this Python or on PATH (pip install -e . or "
                  "--shoal PATH); skipping its cases")
        else:
            print(f"{tool_version(shoal)}: {shlex.join(shoal)}  (load average {loadavg()})")
            fn_file = work / "fn" / "experiment.py"
            cmd_file = work / "cmd" / "experiment.py"
            for path, text in ((fn_file, FN_EXPERIMENT), (cmd_file, CMD_EXPERIMENT)):
                path.parent.mkdir(parents=True)
                path.write_text(text.format(n=args.n))
            print(f"  $ {shlex.join(shoal)} run EXP -j {args.jobs} --progress none --root ROOT"
                  "   (a fresh ROOT each time)")
            print(f"  {byte_compile()}")
        for r in range(args.rounds):
            print(f"  round {r + 1} of {args.rounds}:")
            for where, base in roots.items() if shoal is not None else ():
                fn.setdefault(where, []).append(run_shoal_tasks(
                    f"function tasks, root on {where}", shoal, fn_file,
                    fresh_dir(base, "root-fn-"), args.n, args.jobs, args.timeout))
                cmd.setdefault(where, []).append(run_shoal_tasks(
                    f"command tasks, root on {where}", shoal, cmd_file,
                    fresh_dir(base, "root-cmd-"), args.n, args.jobs, args.timeout))
            xargs.append(run_xargs(args.n, args.jobs, work, args.timeout))

        print()
        snakemake = None if args.skip_snakemake else find_snakemake(args.snakemake)
        if args.skip_snakemake:
            snake_note = "skipped (--skip-snakemake)"
            print(f"snakemake: {snake_note}")
        elif snakemake is None:
            snake_note = "not installed (pip install snakemake, or --snakemake PATH)"
            print(f"snakemake: {snake_note}")
        else:
            print(f"snakemake {tool_version(snakemake)}: {shlex.join(snakemake)}  "
                  f"(load average {loadavg()})")
            snake = run_snakemake(snakemake, work / "snakemake", args.n, args.jobs,
                                  args.timeout)

        print()
        if args.skip_lstm:
            lstm_note = "skipped (--skip-lstm)"
            print(f"streamflow LSTM: {lstm_note}")
        else:
            print(f"streamflow LSTM, {args.trainings} trainings (site {LSTM_SITE}, factor "
                  f"{LSTM_FACTOR}), {args.jobs} at a time (load average {loadavg()}):")
            array = run_array(args.python, work / "array", args.trainings, args.jobs,
                              args.timeout)
            if shoal is None:
                print("  shoal: not found")
            else:
                lstm = run_shoal_lstm(shoal, fresh_dir(work, "root-lstm-"), args.trainings,
                                      args.jobs, args.timeout)
    finally:
        if args.keep:
            print(f"\n(kept {work}" + (f" and {tmpfs})" if tmpfs else ")"))
        else:
            shutil.rmtree(work, ignore_errors=True)
            if tmpfs is not None:
                shutil.rmtree(tmpfs, ignore_errors=True)

    report(args, fn, cmd, xargs, snake, snake_note, array, lstm, lstm_note)
    print(f"  (load average {load} at start, {loadavg()} at the end; cpu is user + system of "
          "the reaped process tree: wall well above cpu / jobs means waiting, or other load)")
    stolen = [t.steal for ts in (*fn.values(), *cmd.values(), xargs) for t in ts
              if t.steal is not None]
    if stolen and max(stolen) >= 0.05:
        print(f"  (CPU steal up to {max(stolen):.0%} during these measurements: the host gave "
              "that share of this VM's CPU time to others; figures of such rounds are slow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
