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

from shoal.spec.around import Container


def container_argv(c: Container, inner: str, *, cwd: str, root: str,
                   env: Mapping[str, str], gpus: bool, name: str | None = None,
                   extra_binds: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
    """The argv running ``inner`` (a shell command) in ``c``, and the variables the
    runtime's own process needs (apptainer reads the task's variables from them).
    ``name``: the container's name (podman, docker), to remove it if the runtime is
    killed (the container would outlive it). ``extra_binds``: the folders of the task's
    inputs and outputs outside the experiment folder and the run root."""
    binds = list(dict.fromkeys([cwd, root, *c.bind, *extra_binds]))
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
    if name:
        argv += ["--name", name]
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


def remove_argv(c: Container, name: str) -> list[str] | None:
    """The command that removes a container left running by a killed runtime (podman and
    docker: the container outlives a SIGKILL of its ``run`` process); None for apptainer,
    whose processes are the task's own."""
    if c.kind == "podman":
        return [c.runtime, "rm", "--force", "--time", "0", name]
    if c.kind == "docker":
        return [c.runtime, "rm", "--force", name]
    return None


def shell() -> str:
    """The shell for setup lines: bash where there is one (``source``, ``module``), else
    sh."""
    return shutil.which("bash") or "/bin/sh"


#: The status of a script whose setup lines failed, or ended the shell, before its command.
SETUP_FAILED = 86

_TRAP = ("trap 's=$?; if [ -z \"${SHOAL_SETUP_DONE:-}\" ]; then echo \"shoal: the "
         "setup= lines of the step ended the shell (status $s) before the command ran\" >&2; "
         f"exit {SETUP_FAILED}; fi; exit $s' EXIT")


def with_setup(setup: Sequence[str], command: str, argv: list[str] | None) -> str:
    """A script running the ``setup`` lines (any failure ends it: ``set -e``; so does a
    line that exits the shell, even with status 0: the command must run), then the command
    (``exec`` when it is one program, so that it receives stop signals itself)."""
    body = f"exec {shlex.join(argv)}" if argv else command
    return "\n".join([_TRAP, "set -e", *setup, "set +e", "SHOAL_SETUP_DONE=1", body])
