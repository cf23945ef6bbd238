"""The other commands of ``shoal``: status, results, report, logs, cancel, pack-data."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from shoal.cli.common import _load, _table
from shoal.errors import ShoalError
from shoal.plan.build import build_plan
from shoal.state.status import task_label


def cmd_cancel(args: argparse.Namespace) -> int:
    from shoal.backends.slurm import cancel, commands

    exp = _load(args)
    if not commands.available():
        raise ShoalError("shoal cancel: sbatch/scancel are not on PATH (no Slurm here)")
    arrays, elements = cancel(exp.root)
    if not arrays:
        print(f"shoal: no Slurm jobs of {exp.root} are queued or running", file=sys.stderr)
        return 0
    print(f"shoal: cancelled {len(arrays)} array(s) ({', '.join(arrays)}), {elements} "
          "element(s) queued or running", file=sys.stderr)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from shoal.api import clean

    exp = _load(args, reuse_config=True)
    found = clean.find(exp)
    if not found:
        print(f"shoal: nothing to clean: every task folder and output under {exp.root} "
              "belongs to a task of the current grid", file=sys.stderr)
        return 0
    shown = [*(str(p) for p in found.folders), *found.outputs]
    if args.yes:
        clean.remove(exp, found)  # (under the root's lock: refused during a run)
    verb = "removed" if args.yes else "would remove"
    print(f"shoal: {verb} {len(found.folders)} task folder(s) and {len(found.outputs)} "
          f"output(s) that no task of the current grid owns"
          + (f" (and forget {len(found.records)} stored task(s))" if found.records else ""),
          file=sys.stderr)
    for path in shown[:50]:
        print(f"  {path}")
    if len(shown) > 50:
        print(f"  ... and {len(shown) - 50} more")
    if not args.yes:
        print("shoal: nothing removed; `shoal clean --yes` removes them", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from shoal.results.export import export

    exp = _load(args, reuse_config=True)
    to, dest = args.to
    rep = export(exp, to, dest, steps=args.step or None)
    done = sum(rep.exported.values())
    per = ", ".join(f"{s} {n:,}" for s, n in rep.exported.items())
    print(f"shoal: exported {done:,} tasks{f' ({per})' if per else ''} to {to} "
          f"{rep.dest}; {rep.unchanged:,} unchanged since the last export", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from shoal.api.serve import serve

    exp = _load(args, reuse_config=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"shoal: warning: listening on {args.host}: anyone who can reach it and has "
              "the token sees this experiment; 127.0.0.1 with ssh -L is safer",
              file=sys.stderr)

    def ready(url: str) -> None:
        import re

        port = re.search(r":(\d+)/", url).group(1)  # type: ignore[union-attr]
        print(f"shoal: dashboard of {exp.name} at\n    {url}\n"
              f"  from another machine: ssh -L {port}:127.0.0.1:{port} "
              f"{os.uname().nodename}, then open the URL there; Ctrl-C stops",
              file=sys.stderr, flush=True)

    serve(exp, host=args.host, port=args.port, ready=ready)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from shoal.results.report import write_report

    exp = _load(args, reuse_config=True)
    path = write_report(exp, Path(args.output), all_plots=args.all)
    print(f"shoal: wrote {path}", file=sys.stderr)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from shoal.results.table import results, summary, write_table

    exp = _load(args, reuse_config=True)
    plan = build_plan(exp, exp.root, missing_inputs="skip")
    if args.headline or args.baseline or args.replicates or args.split:
        from shoal.cli.compare import cmd_compare

        return cmd_compare(exp, plan, args)
    if args.by or args.metric or args.summary:
        frame = summary(exp, args.step, by=args.by, metrics=args.metric or None,
                        level=args.level, plan=plan)
    else:
        frame = results(exp, args.step, plan=plan)
    text = write_table(frame, args.format, Path(args.output) if args.output else None)
    if text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from shoal.state.resultfile import LOG

    exp = _load(args, reuse_config=True)
    plan = build_plan(exp, exp.root, missing_inputs="skip")
    if args.step not in plan.steps:
        raise ShoalError(f"unknown step '{args.step}' (steps: {', '.join(plan.steps)})")
    sp = plan.steps[args.step]
    want = {}
    for item in args.params:
        dim, sep, value = item.partition("=")
        if not sep or dim not in sp.dims:
            raise ShoalError(f"'{item}': give DIM=VALUE with a dimension of '{sp.name}' "
                             f"({', '.join(sp.dims) or 'none'})")
        want[dim] = value
    from shoal.plan.build import pick_values

    chosen = {d: pick_values(exp.grid.values[d], d, text, f"'{d}={text}'", f" of '{sp.name}'")
              for d, text in want.items()}
    hits = [i for i in range(len(sp)) if all(
        v in chosen[d] for d, v in sp.param_dict(i).items() if d in want)]
    if len(hits) != 1:
        shown = ", ".join(plan.task_label(sp, i) for i in hits[:5])
        raise ShoalError(
            f"{len(hits)} tasks of '{sp.name}' match {' '.join(args.params) or '(nothing)'}"
            + (f" (e.g. {shown})" if hits else "") + "; give every dimension: "
            + " ".join(f"{d}=..." for d in sp.dims)
        )
    key = sp.keys[hits[0]]
    folder = plan.root / sp.name / key if key else plan.root / sp.name
    path = folder / LOG
    if not path.exists():
        label = plan.task_label(sp, hits[0])
        if not folder.exists():
            raise ShoalError(f"{label} has not run yet (no folder {folder})")
        print(f"{label} wrote no output (no {LOG} in {folder})", file=sys.stderr)
        return 0
    text = path.read_text(errors="replace")
    if args.tail:
        text = "\n".join(text.splitlines()[-args.tail:]) + "\n"
    sys.stdout.write(text)
    return 0


def cmd_pack_data(args: argparse.Namespace) -> int:
    from shoal.worker.staging import archive_name, pack_data

    n = pack_data(args.folder, args.output)
    size = os.path.getsize(args.output)
    print(f"shoal: {n:,} files from {args.folder} in {args.output} ({size / 2**20:.1f} MiB); "
          f"stage=[\"{args.output}\"] and ctx.staged(\"{archive_name(args.output)}\") use it",
          file=sys.stderr)
    return 0


def _follow_detached(exp: Any) -> dict[str, Any] | None:
    """Ingest what a detached submission left (when no controller holds the root) and
    count what Slurm still holds; None when the root has no detached submission."""
    from shoal.backends.slurm import detach
    from shoal.plan.build import DONE
    from shoal.state.lock import RootLock
    from shoal.state.store import Store

    if not detach.manifest_path(exp.root).exists():
        return None
    from shoal.backends.slurm.commands import SlurmError
    from shoal.errors import LockedError

    try:
        with RootLock(exp.root).acquire("shoal status"), \
                Store.open(exp.root, create=True) as store:
            states = detach.snapshot(exp.root)
            detach.ingest(build_plan(exp, exp.root, missing_inputs="skip"), store)
            tasks, alive = detach.live(exp.root, states, prune=True)
    except LockedError:
        return None  # a controller attached to it reports progress
    except (SlurmError, OSError) as exc:
        print(f"shoal: warning: cannot ask Slurm about the detached jobs: {exc}",
              file=sys.stderr)
        return None
    plan = build_plan(exp, exp.root, missing_inputs="skip")
    done = {(name, sp.keys[i]) for name, sp in plan.steps.items()
            for i, s in enumerate(sp.state) if s == DONE}
    tasks = {t: v for t, v in tasks.items() if t not in done}
    return {"elements": len(alive), "steps": detach.summary(alive, tasks)}


def cmd_status(args: argparse.Namespace) -> int:
    from shoal.results.states import STATES, counts, task_states
    from shoal.state.store import Store, rescan

    exp = _load(args, reuse_config=True)
    if args.rescan:
        from shoal.state.lock import RootLock

        with RootLock(exp.root).acquire("shoal status --rescan"):
            found = rescan(exp.root)
        total = sum(found.values())
        detail = ", ".join(f"{n:,} {s}" for s, n in sorted(found.items())) or "nothing"
        print(f"rescanned {exp.root}: {total:,} task records ({detail})", file=sys.stderr)
    from shoal.state.lock import RootLock

    slurm = _follow_detached(exp)
    plan = build_plan(exp, exp.root, missing_inputs="skip")
    live = RootLock(exp.root).held_by_other()
    with Store.open(exp.root) as store:
        stored = {name: store.statuses(name) for name in plan.steps}
        failures = [r for r in store.records(status="failed")][: max(0, args.failures)]
    out: dict[str, Any] = {"experiment": exp.name, "root": str(exp.root), "steps": {}}
    for name, sp in plan.steps.items():
        out["steps"][name] = {"total": len(sp.state),
                              **counts(task_states(sp, stored[name], live))}
    out["total"] = sum(s["total"] for s in out["steps"].values())
    out["done"] = sum(s["done"] for s in out["steps"].values())
    out["controller"] = "running" if live else "none"
    if slurm is not None:
        out["slurm"] = slurm
    out["failures"] = [
        {"step": r.step, "key": r.key, "error": r.error, "log_tail": r.log_tail}
        for r in failures
    ]
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{exp.name}: {out['done']:,} of {out['total']:,} tasks done  (root: {exp.root})")
    cols = ["total", *[c for c in STATES if c == "done" or any(
        s[c] for s in out["steps"].values())]]  # (states no step is in: left out)
    rows = [[name] + [s[c] for c in cols] for name, s in out["steps"].items()]
    print(_table(rows, ["step", *cols]))
    if slurm is not None:
        held = ", ".join(f"{s}: {c['queued']:,} queued, {c['running']:,} running"
                         for s, c in slurm["steps"].items())
        print(f"\ndetached Slurm jobs: {slurm['elements']:,} array elements still held "
              f"({held})" if slurm["elements"] else
              "\ndetached Slurm jobs: all ended; `shoal run` reruns what failed or is missing")
    if live:
        with Store.open(exp.root) as store:
            chained = store.chained()
        for step, key, k, n in chained[:10]:
            print(f"running: {task_label(step, key)}: segment {k} of {n}")
    for r in failures:
        print(f"\nfailed: {r.label}: {r.error}")
        for line in (r.log_tail or "").splitlines()[-8:]:
            print(f"  | {line}")
    return 0
