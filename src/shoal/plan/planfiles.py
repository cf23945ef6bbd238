"""The files of planned tasks, checked before anything runs: each step's inputs (digested)
and outputs filled per task (:mod:`shoal.plan.taskfiles`), one owner per output, nothing
dangerous owned, no input that a task writes, no task path over the system's limit."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from shoal.errors import SpecError
from shoal.plan.taskfiles import FileDigests, StepFiles, check_claims, expand_inputs, expand_outputs
from shoal.plan.tasks import StepPlan
from shoal.spec.experiment import Experiment

#: What shoal adds below a task folder: "/.shoal-result.json.<16 hex>.tmp" and some margin.
_OWN_FILES = 64


def check_path_length(sp: StepPlan, root: Path) -> None:
    """A task folder whose path (with shoal's files in it) exceeds the system's limit is an
    error before anything runs (it failed at run time, with a message of its own length)."""
    if not sp.keys:
        return
    key = max(sp.keys, key=len)
    folder = f"{root}/{sp.name}/{key}"
    size = len(os.fsencode(folder)) + _OWN_FILES
    try:
        limit = os.pathconf(root if root.exists() else "/", "PC_PATH_MAX")
    except (OSError, ValueError):
        limit = 4096
    if size > limit:
        longest = sp.keys.index(key)
        parts = key.split("/")
        widest = max(parts, key=len).partition("=")[0]
        raise SpecError(
            f"step '{sp.name}': the folder of task {sp.label(longest)[:80]}... would be "
            f"{size - _OWN_FILES} bytes long, and with shoal's files over the system's limit "
            f"of {limit}; shorten the values of dimension '{widest}' (a short id, the long "
            "value looked up inside the step), drop dimensions from per=, or use a shorter "
            "--root"
        )


def step_files(exp: Experiment, sp: StepPlan, digests: FileDigests) -> StepFiles | None:
    """The step's input files (digested) and outputs, per task; None without either."""
    a = exp.around(sp.step)
    if a.inputs is None and a.outputs is None:
        return None
    vars = dict(a.vars)
    if a.inputs is not None:
        files = expand_inputs(a.inputs, sp.dims, vars, sp.params, digests,
                              sp.label, sp.name)
    else:
        files = StepFiles()
    if a.outputs is not None:
        expand_outputs(files, a.outputs, sp.dims, vars, sp.params, digests.base, sp.name)
    return files


def check_files(exp: Experiment, plans: dict[str, StepPlan], digests: FileDigests,
                   root: Path | None) -> None:
    """Each output belongs to one task; none holds the experiment or the run root."""
    claims: list[tuple[str, str, str]] = []
    real: dict[str, str] = {}

    def resolved(path: str) -> str:  # (through symbolic links in its folders)
        folder, name = os.path.split(path)
        got = real.get(folder)
        if got is None:
            got = real[folder] = os.path.realpath(folder)
        return f"{got.rstrip('/')}/{name}" if name else got

    if root is not None and not any(sp.files and sp.files.outputs for sp in plans.values()):
        spot = os.path.realpath(root)  # (inputs only: folders may hold the root, files not)
        for p, digest in digests.memo.items():
            if not (digest or "").startswith("tree:"):
                continue
            full = resolved(digests.abspath(p))
            if spot == full or spot.startswith(full.rstrip("/") + "/"):
                who = next(f"task {sp.label(i)}" for sp in plans.values() if sp.files
                           and sp.files.inputs for i, entries in enumerate(sp.files.inputs)
                           if any(p in paths for _, paths in entries))
                check_claims([(full, "input", who)], {spot: "the run root"})
        return
    for sp in plans.values():
        files = sp.files
        if files is None:
            continue
        if files.outputs is not None:
            for i, outs in enumerate(files.outputs):
                who = f"task {sp.label(i)}"
                if len(set(outs)) != len(outs):
                    raise SpecError(f"{who}: outputs= names one path twice ({outs})")
                claims.extend((resolved(o), "output", who) for o in outs)
        if files.inputs is not None:
            for i, entries in enumerate(files.inputs):
                who = f"task {sp.label(i)}"
                claims.extend((resolved(digests.abspath(p)), "input", who)
                              for _, paths in entries for p in paths)
    _check_globs(plans, claims, digests)
    protected = {os.path.realpath(digests.base): "the experiment folder"}
    if exp.source is not None:
        protected[os.path.realpath(exp.source)] = "the experiment file"
    if root is not None:
        protected[os.path.realpath(root)] = "the run root"
    check_claims(claims, protected)


def _check_globs(plans: dict[str, StepPlan], claims: list[tuple[str, str, str]],
                 digests: FileDigests) -> None:
    """A glob input that would match a task's output: it matched nothing (or less) while
    that task had not run, and more once it had — an input that changes under the plan."""
    outputs = [p for p, kind, _ in claims if kind == "output"]
    for sp in plans.values():
        for pattern, i in (sp.files.patterns.items() if sp.files else ()):
            full = digests.abspath(pattern)
            depth = full.count("/")
            hit = next((o for o in fnmatch.filter(outputs, full)
                        if "**" in full or o.count("/") == depth), None)
            if hit is not None:
                owner = next(who for p, kind, who in claims if p == hit and kind == "output")
                raise SpecError(
                    f"task {sp.label(i)}: its input glob {pattern!r} matches {hit}, an "
                    f"output of {owner}; a file that a task writes is no input to hash at "
                    "plan time: depend on that step with needs= instead, or narrow the glob"
                )
