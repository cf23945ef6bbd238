"""The command line around a command step's own command: its ``setup=`` lines, and the
container runtime it runs in (``container=``). Plain text and argv; nothing runs here.

Apptainer/Singularity: ``exec --cleanenv`` with the experiment folder and the run root bound
at the same paths, ``--pwd`` the experiment folder, ``--nv`` for a task with GPUs; the
task's variables pass as ``APPTAINERENV_*``/``SINGULARITYENV_*`` (values may hold commas).
Podman/Docker: ``run --rm --init`` with the same bind mounts and working folder, the
variables passed by name (``-e NAME``), GPUs through CDI (podman) or ``--gpus`` (docker).
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence

from shoal.around import Container


def container_argv(c: Container, inner: str, *, cwd: str, root: str,
                   env: Mapping[str, str], gpus: bool) -> tuple[list[str], dict[str, str]]:
    """The argv running ``inner`` (a shell command) in ``c``, and the variables the
    runtime's own process needs (apptainer reads the task's variables from them)."""
    binds = list(dict.fromkeys([cwd, root, *c.bind]))
    kind = c.kind
    if kind in ("apptainer", "singularity"):
        prefix = "APPTAINERENV_" if kind == "apptainer" else "SINGULARITYENV_"
        argv = [c.runtime, "exec", "--cleanenv"]
        for b in binds:
            argv += ["--bind", b]
        if gpus:
            argv.append("--nv")
        argv += ["--pwd", cwd, *c.options, c.image, "/bin/sh", "-c", inner]
        return argv, {f"{prefix}{k}": v for k, v in env.items()}
    argv = [c.runtime, "run", "--rm", "--init"]
    for b in binds:
        argv += ["-v", f"{b}:{b}"]
    argv += ["-w", cwd]
    for k in env:
        argv += ["-e", k]  # (by name: the value comes from the runtime's environment)
    if gpus:
        argv += ["--device", "nvidia.com/gpu=all"] if kind == "podman" else ["--gpus", "all"]
    if kind == "docker":  # files in the bound folders belong to the user, not to root
        argv += ["--user", f"{os.getuid()}:{os.getgid()}"]
    argv += [*c.options, c.image, "/bin/sh", "-c", inner]
    return argv, {}


def shell() -> str:
    """The shell for setup lines: bash where there is one (``source``, ``module``), else
    sh."""
    return shutil.which("bash") or "/bin/sh"


def with_setup(setup: Sequence[str], command: str, argv: list[str] | None) -> str:
    """A script running the ``setup`` lines (any failure ends it: ``set -e``), then the
    command (``exec`` when it is one program, so that it receives stop signals itself)."""
    body = f"exec {shlex.join(argv)}" if argv else command
    return "\n".join(["set -e", *setup, "set +e", body])
