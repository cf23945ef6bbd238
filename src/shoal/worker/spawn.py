"""Starting a command's process with the standard library (``os.posix_spawn``).

The child's stdin is /dev/null, its stdout and stderr the task's log; it gets SIGPIPE and
SIGXFSZ back at their defaults (Python ignores them), as ``subprocess`` does, and may lead a
process group of its own (so that a stop or a kill reaches everything it started). It is
waited for without being reaped (:func:`wait_exited`), so that its pid cannot go to
another process while something may still signal it.

``os.posix_spawn`` holds the GIL until the child has exec'ed its program (a fraction of a
millisecond): nothing next to a command of seconds; for thousands of trivial commands the
controller's threads take turns (``benchmarks/local_throughput.py`` measures the rate).
"""

from __future__ import annotations

import os
import signal

_DEFAULTS = (signal.SIGPIPE, signal.SIGXFSZ)  # reset in the child, as subprocess does


def spawn(path: str, argv: list[str], base_env: dict[str, str], extra_env: dict[str, str],
          log_fd: int, new_group: bool = False) -> int:
    """Start ``path`` with ``argv`` and ``base_env`` updated by ``extra_env``; stdin from
    /dev/null, stdout and stderr to ``log_fd``; in a process group of its own when
    ``new_group``. Returns the pid; raises OSError when it cannot start (ValueError for a
    NUL byte in an argument or variable)."""
    env = {**base_env, **extra_env} if extra_env else base_env
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2)]
    if new_group:
        return os.posix_spawn(path, argv, env, file_actions=actions, setsigdef=_DEFAULTS,
                              setpgroup=0)
    return os.posix_spawn(path, argv, env, file_actions=actions, setsigdef=_DEFAULTS)


def wait_exited(pid: int) -> None:
    """Block until the child ``pid`` has exited, without reaping it. While it is not reaped,
    neither its pid nor its process group id can go to another process, so a signal that
    races its end (a timeout, a stop) cannot reach a stranger: clear what refers to the pid,
    then reap it with ``os.waitpid``."""
    try:  # noqa: SIM105 (per task: a bare try costs less than contextlib.suppress)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # (already reaped by someone else: waitpid will say so)
        pass
