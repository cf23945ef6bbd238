"""A persistent local worker process: imports the experiment once, then runs tasks on request.

Started by the local backend as ``python -m shoal.backends.local.worker FD_IN FD_OUT``; talks
over two pipes (pickled messages): ``("run", [specs])`` in, ``("done", outcome)`` out, and
runs the specs through the one worker entry (:func:`shoal.worker.execute.execute`). It ignores
SIGINT (the controller decides), turns SIGTERM/SIGUSR2 into ``ctx.should_stop()``, and dies
with the controller (PR_SET_PDEATHSIG), so a killed controller leaves no orphans behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from multiprocessing.connection import Connection


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    parent = int(os.environ.get("SHOAL_PARENT_PID", "0"))
    if parent and os.getppid() != parent:  # the controller died before prctl took effect
        return 1
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    from shoal.spec.loader import load_experiment
    from shoal.worker import task as worker
    from shoal.worker.execute import execute

    worker.install_stop_handlers()
    try:
        msg = inbox.recv()
        assert msg[0] == "init"
        _, target, config, cwd = msg
        if cwd:
            os.chdir(cwd)
        exp = load_experiment(target, config, strict_config=False)
    except EOFError:
        return 0
    except BaseException as exc:
        outbox.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return 1
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            msg = inbox.recv()
        except (EOFError, OSError):
            return 0
        if msg[0] == "exit":
            return 0
        if msg[0] == "run":  # a task, a bundle of short ones, or a pack's members
            try:
                for result in execute(msg[1], lambda: exp):
                    outbox.send(("done", result))
            except (BrokenPipeError, OSError):
                return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
