"""The ``shoal`` command: parses arguments, calls the public API, prints. Nothing else."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal.cli import results_parsers
from shoal.cli.common import _load, _only, _table, _warn
from shoal.errors import ShoalError


def _common(p: argparse.ArgumentParser, only: bool = True) -> None:
    p.add_argument("experiment", metavar="EXP", nargs="?", help="experiment .py file, or a "
                   "folder with experiment.py (FILE:NAME picks one of several); default: "
                   "./experiment.py")
    p.add_argument("--config", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="values the experiment reads with shoal.config(KEY, default)")
    p.add_argument("--config-file", metavar="FILE", help="TOML or JSON file of config values "
                   "(--config overrides it)")
    p.add_argument("--root", metavar="DIR", help="run root (default: runs/ beside the "
                   "experiment file; or $SHOAL_ROOT)")
    if only:
        p.add_argument("--only", metavar="DIM=VALUE", nargs="+", action="extend", default=[],
                       help="restrict to tasks at these values (repeat a dim for several)")


def _at_least(low: float, kind: type = int, strict: bool = False) -> Any:
    """An argparse type: a number (``kind``) >= ``low`` (> ``low`` where ``strict``), with
    argparse's one-line usage error."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value:  # (None: not a number; NaN: neither)
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if strict else '>='} "
                                             f"{low:g}")
        return value

    parse.__name__ = kind.__name__  # (argparse names the type in its messages)
    return parse


def _view(name: str) -> Any:
    def call(args: argparse.Namespace) -> int:
        from shoal.cli import views as cli_views

        return int(getattr(cli_views, name)(args))

    return call


def _tune(args: argparse.Namespace) -> int:
    from shoal.cli.tune import cmd_tune

    return cmd_tune(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal",
        description="Run large grids of independent ML experiments: plan, run, resume, results.",
    )
    parser.add_argument("--version", action="version", version=f"shoal {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("plan", help="what would run, and why (runs nothing)")
    _common(p)
    p.add_argument("--why", action="store_true", help="show sample tasks per reason")
    p.add_argument("--limit", type=_at_least(0), default=5, help="tasks shown per step and reason")
    p.add_argument("--json", action="store_true", help="machine-readable counts")
    p.add_argument("--keep-going", action="store_true", help="show tasks whose input files "
                   "are missing as blocked (as `run --keep-going` would skip them) instead "
                   "of stopping with an error")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run what is missing, failed or out of date")
    _common(p)
    p.add_argument("-j", "--jobs", type=_at_least(1), help="CPU slots (default: all cores)")
    p.add_argument("--gpus", help="GPU devices to use, e.g. 0,1 (default: detected; 'none')")
    p.add_argument("--mem", help="memory to hand out, e.g. 20G (default: available memory)")
    p.add_argument("--retries", type=_at_least(0), help="extra attempts per failed task (steps' "
                   "retries= override)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--keep-going", dest="keep_going", action="store_true", default=None,
                   help="run independent tasks after a failure (default); also run the "
                   "tasks that have their input files when others lack theirs")
    g.add_argument("--fail-fast", dest="keep_going", action="store_false",
                   help="stop launching after the first failure")
    p.add_argument("--grace", type=_at_least(0, float), default=30.0,
                   help="seconds stopped tasks get to checkpoint before they are killed")
    p.add_argument("--max-requeues", type=_at_least(0), metavar="N",
                   help="times a task interrupted by preemption, requeue or a segment's "
                   "end goes out again (default 10, plus its chained segments)")
    p.add_argument("--progress", choices=["auto", "rich", "plain", "none"], default="auto",
                   help="live progress: a table on a terminal (rich), lines every "
                   "--progress-interval elsewhere (plain: CI, nohup, Slurm), or none "
                   "(default: auto)")
    p.add_argument("--progress-interval", type=_at_least(0, float, strict=True),
                   default=10.0, help="seconds between plain progress lines")
    p.add_argument("--backend", choices=["local", "slurm", "ray"],
                   help="where to run (default: local; with --profile, the profile's "
                   "backend = ..., else slurm)")
    p.add_argument("--yes", action="store_true", help="replace the done results of the last "
                   "run's other --config without asking (default: ask on a terminal, else "
                   "stop)")
    p.add_argument("--profile", metavar="NAME", help="cluster settings from NAME.toml beside "
                   "the experiment (or profiles/NAME.toml, or ~/.config/shoal/profiles/), or "
                   "a .toml path; flags override it")
    p.add_argument("--address", metavar="HOST:PORT", help="(--backend ray) the Ray cluster "
                   "(default: the profile's [ray] address, else $RAY_ADDRESS)")
    sg = p.add_argument_group("Slurm (--backend slurm)")
    sg.add_argument("--detach", action="store_true", help="submit every step at once (with "
                   "job dependencies) and return; `shoal status` follows, `shoal run` "
                   "attaches again")
    sg.add_argument("--partition", help="sbatch --partition")
    sg.add_argument("--account", help="sbatch --account")
    sg.add_argument("--qos", help="sbatch --qos")
    sg.add_argument("--throttle", type=_at_least(1), metavar="K", help="run at most K elements of "
                   "each array at once (--array=...%%K)")
    sg.add_argument("--tasks-per-job", type=_at_least(1), metavar="N",
                   help="tasks bundled per array element (default: as many as fit in 30 "
                   "min by the step's time=)")
    sg.add_argument("--max-time", metavar="TIME", help="longest job (default: the partition's "
                   "MaxTime); a longer task runs as chained segments (it must checkpoint)")
    sg.add_argument("--signal-grace", metavar="TIME", help="USR2 this long before a job's "
                   "time limit, to checkpoint (seconds, or 5m...; default 90)")
    sg.add_argument("--mem-retry-factor", type=_at_least(1, float), metavar="F",
                   help="after OUT_OF_MEMORY, retry (within retries=) with the step's mem "
                   "times F")
    sg.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="extra sbatch option, e.g. --sbatch=--constraint=v100 (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("logs", help="print a task's log")
    _common(p, only=False)
    p.add_argument("step", help="step name")
    p.add_argument("params", nargs="*", metavar="DIM=VALUE", help="the task's parameters")
    p.add_argument("--tail", type=_at_least(1), help="only the last N lines")
    p.set_defaults(func=_view("cmd_logs"))

    results_parsers.add(sub, _common, _view)

    p = sub.add_parser("cancel", help="cancel this run root's Slurm jobs (only those)")
    _common(p, only=False)
    p.set_defaults(func=_view("cmd_cancel"))

    p = sub.add_parser("clean", help="list (and with --yes remove) task folders and "
                       "outputs that no task of the current grid and steps owns")
    _common(p, only=False)
    p.add_argument("--yes", action="store_true", help="remove them (default: only list)")
    p.set_defaults(func=_view("cmd_clean"))

    p = sub.add_parser("pack-data", help="write a folder's files into one archive for "
                       "stage= (unpacked once per node instead of read file by file)")
    p.add_argument("folder", metavar="DIR", help="the folder to pack")
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="the archive to write (.tar, or .tar.gz to compress)")
    p.set_defaults(func=_view("cmd_pack_data"))

    p = sub.add_parser("tune", help="threads per task x tasks at once: the most tasks per "
                       "hour for a step on this machine (runs a sample, keeps no results)")
    _common(p, only=False)
    p.add_argument("step", metavar="STEP", help="the step to measure")
    p.add_argument("--sample", type=_at_least(1), help="tasks per setting (default: twice "
                   "the most tasks at once, at least 4)")
    p.add_argument("--repeats", type=_at_least(1), default=2, help="runs of each setting, "
                   "for the spread (2)")
    p.add_argument("--threads", help="threads per task to try, e.g. 1,2,4 (default: 1, 2, "
                   "4, ... up to the cores)")
    p.add_argument("-j", "--jobs", type=_at_least(1), help="cores to fill (default: all)")
    p.add_argument("--backend", choices=["local", "slurm"], default="local", help="measure "
                   "here, or on one whole Slurm node (srun --exclusive)")
    p.add_argument("--partition", help="(--backend slurm) the partition of the node")
    p.add_argument("--profile", metavar="NAME", help="(--backend slurm) the Slurm profile "
                   "whose partition, account and qos to use")
    p.add_argument("--write-profile", metavar="NAME", help="write the recommended cpus into "
                   "this Slurm profile's [steps.STEP] table (NAME.toml beside the experiment, "
                   "or a path): later runs with --profile NAME use it")
    p.set_defaults(func=_tune)

    p = sub.add_parser("status", help="counts by state from the store")
    _common(p, only=False)
    p.add_argument("--json", action="store_true", help="machine-readable counts")
    p.add_argument("--rescan", action="store_true",
                   help="rebuild the store from the task folders' result files first")
    p.add_argument("--failures", type=_at_least(0), default=10, help="failed tasks to list (with "
                   "the last lines of their logs)")
    p.set_defaults(func=_view("cmd_status"))
    return parser


def cmd_plan(args: argparse.Namespace) -> int:
    from shoal.plan.build import build_plan

    exp = _load(args)
    exp.validate()
    _warn(exp)
    plan = build_plan(exp, exp.root, only=_only(exp, args),
                      missing_inputs="skip" if args.keep_going else "error")
    summary = plan.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    blocked = f", {summary['blocked']:,} blocked" if summary["blocked"] else ""
    print(f"{exp.name}: {summary['total']:,} tasks, {summary['run']:,} to run{blocked}  "
          f"(root: {plan.root})")
    header = ["step", "total", "done", "run", "missing", "failed", "changed"]
    rows = [
        [name, s["total"], s["done"], s["run"], s["reasons"]["missing"], s["reasons"]["failed"],
         s["reasons"]["changed"]] + ([s["blocked"]] if blocked else [])
        for name, s in summary["steps"].items()
    ]
    print(_table(rows, header + (["blocked"] if blocked else [])))
    if args.why:
        from shoal.plan.build import DONE, REASONS

        for sp in plan.steps.values():
            shown: dict[int, int] = {}
            lines: list[str] = []
            for i, s in enumerate(sp.state):
                if s == DONE or not sp.is_included(i) or shown.get(s, 0) >= args.limit:
                    continue
                shown[s] = shown.get(s, 0) + 1
                why = sp.detail.get(i) or ("never ran" if s == 1 else "")
                lines.append(f"  {REASONS[s]:8s} {plan.task_label(sp, i)}  {why}".rstrip())
            if lines:
                print(f"\n{sp.name}:")
                print("\n".join(lines))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from shoal.api.runner import print_report, run_experiment
    from shoal.backends.slurm import profile
    from shoal.schedule.slots import parse_gpu_list
    from shoal.spec.resources import parse_mem

    exp = _load(args)
    slurm = ray = None
    path = (profile.find(args.profile, exp.source.parent if exp.source else None)
            if args.profile else None)
    named = profile.load(path)["backend"] if path else "local"  # (checks the whole file)
    if args.backend is None:  # (a profile's backend = "..."; Slurm's by default)
        args.backend = named
    if args.backend == "slurm":
        slurm = _slurm_options(exp, args, path)
    elif args.backend == "ray":
        ray = _ray_options(exp, args, path)
    elif path:
        raise ShoalError("--profile holds cluster settings: use it with --backend slurm or "
                         "--backend ray")
    report = run_experiment(
        exp, slurm=slurm,
        jobs=args.jobs, gpus=parse_gpu_list(args.gpus) if args.gpus is not None else None,
        mem_mb=parse_mem("(run)", args.mem, "--mem") if args.mem else None, retries=args.retries,
        keep_going=args.keep_going is not False, only=_only(exp, args), grace_s=args.grace,
        missing_inputs="skip" if args.keep_going else "error",
        progress=args.progress, progress_interval=args.progress_interval, backend=args.backend,
        address=args.address, ray=ray, yes=args.yes, ask=_ask,
        detach=args.detach, max_requeues=args.max_requeues,
    )
    if args.detach:
        if not report.tasks:
            print("shoal: nothing to run: every task is done (shoal plan --why explains)",
                  file=sys.stderr)
            return 0
        arrays = sum(len(a) for a in report.arrays.values())
        steps = ", ".join(f"{s} {n:,}" for s, n in report.tasks.items())
        print(f"shoal: submitted {sum(report.tasks.values()):,} tasks ({steps}) as {arrays} "
              f"job arrays in {report.elapsed:.2f} s; detached.\n"
              f"  follow: shoal status {args.experiment}\n"
              f"  attach: shoal run {args.experiment} --backend slurm"
              f"{' --profile ' + args.profile if args.profile else ''}\n"
              f"  stop:   shoal cancel {args.experiment}", file=sys.stderr)
        return 0
    print_report(report)
    if report.user_stopped:
        return 130
    if report.aborted:
        return 2
    return 0 if report.ok else 1


def _ask(message: str) -> bool:
    """The question before replacing another config's results: asked on a terminal only."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    print(f"shoal: {message}.", file=sys.stderr)
    try:
        answer = input("Replace them? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _ray_options(exp: Any, args: argparse.Namespace, path: Path | None) -> Any:
    from shoal.backends.ray.options import RayOptions

    opts = RayOptions.from_profile(path, args.address)
    _known_steps(exp, path, "ray.steps", opts.steps)
    if path:
        print(f"shoal: Ray profile {path}", file=sys.stderr)
    return opts


def _known_steps(exp: Any, path: Path | None, table: str, steps: dict[str, Any]) -> None:
    unknown = sorted(set(steps) - set(exp.steps))
    if unknown:
        raise ShoalError(
            f"profile {path}: [{table}.{unknown[0]}] names no step of '{exp.name}' "
            f"(steps: {', '.join(exp.steps)}); fix the table name"
        )


def _slurm_options(exp: Any, args: argparse.Namespace, path: Path | None) -> Any:
    from shoal.backends.slurm import SlurmOptions
    from shoal.spec.resources import parse_duration

    opts = SlurmOptions.from_profile(
        path, partition=args.partition, account=args.account, qos=args.qos,
        throttle=args.throttle, tasks_per_job=args.tasks_per_job, extra=list(args.sbatch),
        mem_retry_factor=args.mem_retry_factor,
        max_time=parse_duration("(run)", "--max-time", args.max_time),
        signal_grace=parse_duration(  # a bare number: seconds (as sbatch --signal's @N)
            "(run)", "--signal-grace",
            float(args.signal_grace) if (args.signal_grace or "").isdigit()
            else args.signal_grace),
    )
    _known_steps(exp, path, "steps", opts.steps)
    if path:
        print(f"shoal: Slurm profile {path}", file=sys.stderr)
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ShoalError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (PermissionError, sqlite3.DatabaseError) as exc:  # the run root, the store
        what = getattr(exc, "filename", None)
        where = f" ({what})" if what else ""
        print(f"shoal: error: {type(exc).__name__}: {exc}{where}; check the run root "
              "(--root) is writable, its disk not full and its .shoal/state.db intact "
              "(shoal status --rescan rebuilds it)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if _stdout_closed():  # (`shoal results | head`: quietly)
            return 0
        raise  # (another pipe: shoal's own error, not a reader that went away)
    except OSError as exc:  # a path the user gave (-o, --root…) that cannot be used
        if exc.filename is None or os.environ.get("SHOAL_DEBUG"):
            raise  # (not about a path: shoal's own error, with its traceback)
        print(f"shoal: error: {exc.filename}: {exc.strerror or exc}; check this path (the "
              "run root --root, an output file -o, the experiment's folder)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shoal: interrupted", file=sys.stderr)
        return 130


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return True


if __name__ == "__main__":
    sys.exit(main())
