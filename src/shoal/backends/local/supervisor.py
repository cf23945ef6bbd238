"""A watchdog beside a local run: when the controller dies — ``kill -9``, the OOM killer, a
lost terminal — every process its tasks started dies with it, so that nothing keeps writing
into a task folder that the next ``shoal run`` hands to a new attempt.

The controller starts one supervisor process per run (its own session, so a Ctrl-C to the
terminal's process group does not reach it) and keeps the write end of a pipe to it. It
tells the supervisor the process groups it starts (command tasks, function workers) and the
cleanup commands of containers. A clean end says ``exit``; end of file without it means the
controller died: the supervisor then kills those process groups, runs the cleanups, and kills
every process whose environment carries the run's ``SHOAL_RUN_ID`` (what a task started in a
session of its own), until none is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from shoal.worker.taskspec import RUN_MARK as MARK


class Supervisor:
    """The controller's side: start the watchdog, tell it what runs."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.backends.local.supervisor", run_id],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env={k: v for k, v in os.environ.items() if k != MARK},
        )
        assert self.proc.stdin is not None
        self._fd = self.proc.stdin.fileno()

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError):  # (a supervisor that died: the run goes on)
            os.write(self._fd, f"{line}\n".encode())

    def add_group(self, pgid: int) -> None:
        self._say(f"+g {pgid}")

    def remove_group(self, pgid: int) -> None:
        self._say(f"-g {pgid}")

    def add_cleanup(self, key: str, argv: list[str]) -> None:
        self._say(f"+c {key} {json.dumps(argv)}")

    def remove_cleanup(self, key: str) -> None:
        self._say(f"-c {key}")

    def close(self) -> None:
        """A clean end: the supervisor exits and kills nothing."""
        self._say("exit")
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _marked(run_id: str) -> list[int]:
    """Processes whose environment carries this run's mark."""
    mark = f"{MARK}={run_id}".encode()
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if mark in env.split(b"\0"):
            found.append(int(name))
    return found


def _kill_all(groups: set[int], cleanups: dict[str, list[str]], run_id: str) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    for argv in cleanups.values():  # (a container outlives its killed runtime)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30, check=False)
    if not os.path.isdir("/proc"):
        return
    for _ in range(20):  # (what forks while it is being killed: again, until none is left)
        left = _marked(run_id)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    run_id = argv[0]
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # (only the controller's end decides)
    groups: set[int] = set()
    cleanups: dict[str, list[str]] = {}
    for raw in sys.stdin.buffer:
        line = raw.decode(errors="replace").rstrip("\n")
        op, _, rest = line.partition(" ")
        if op == "exit":
            return 0
        with contextlib.suppress(ValueError):
            if op == "+g":
                groups.add(int(rest))
            elif op == "-g":
                groups.discard(int(rest))
            elif op == "+c":
                key, _, text = rest.partition(" ")
                cleanups[key] = [str(a) for a in json.loads(text)]
            elif op == "-c":
                cleanups.pop(rest, None)
    _kill_all(groups, cleanups, run_id)  # end of file without "exit": the controller died
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
