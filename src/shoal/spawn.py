"""Starting a command's process while other threads keep running Python.

``os.posix_spawn`` holds the GIL for the whole call, and with glibc's ``vfork`` semantics the
call lasts until the child has *exec'ed* its program (~0.3-0.5 ms for a small binary). A
controller that runs command tasks from threads would then stop every other thread, and
itself, for that long per task. Three ways, the first that works here:

* CPython's ``_posixsubprocess.fork_exec`` (what ``subprocess`` uses), on Linux and the
  CPython versions whose signature is known and that release the GIL around its ``vfork``
  (3.11.6+, 3.12, 3.13): it vforks on the calling thread's stack. glibc's ``posix_spawn``
  maps (and unmaps) a new stack for each child, and unmapping in a process whose threads
  run on other CPUs costs a TLB shootdown: this way a spawn costs the parent ~40 % less
  CPU.
* ``posix_spawn`` from libc through ``ctypes``, which releases the GIL around the foreign
  call; the file actions and attributes are set up with the GIL held (``PyDLL``: quick libc
  calls that would only churn the lock), once per thread and log fd.
* ``os.posix_spawn`` (not Linux or macOS).

As ``subprocess`` does, the child gets SIGPIPE and SIGXFSZ back at their defaults (Python
ignores them); its stdin is /dev/null.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

_SETPGROUP = 0x02  # POSIX_SPAWN_SETPGROUP (glibc, musl and macOS)
_SETSIGDEF = 0x04  # POSIX_SPAWN_SETSIGDEF
_BUF = 1024  # bytes for posix_spawn_file_actions_t / posix_spawnattr_t / sigset_t (glibc:
#              80 / 336 / 128)
_DEFAULTS = (signal.SIGPIPE, signal.SIGXFSZ)  # reset in the child, as subprocess does


class _Libc:
    def __init__(self) -> None:
        import ctypes  # (loaded only where this way is used: see _lib)

        try:  # glibc by name; else (musl, macOS) look it up, which runs a tool once
            released = ctypes.CDLL("libc.so.6", use_errno=True)  # calls release the GIL
            name = "libc.so.6"
        except OSError:
            from ctypes.util import find_library

            name = find_library("c") or ""
            released = ctypes.CDLL(name or None, use_errno=True)
        held = ctypes.PyDLL(name or None, use_errno=True)  # calls keep it (short ones)
        self.spawn = released.posix_spawn
        self.spawn.restype = ctypes.c_int
        self.fa_init = held.posix_spawn_file_actions_init
        self.fa_open = held.posix_spawn_file_actions_addopen
        self.fa_open.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_uint]
        self.fa_dup2 = held.posix_spawn_file_actions_adddup2
        self.fa_destroy = held.posix_spawn_file_actions_destroy
        self.at_init = held.posix_spawnattr_init
        self.at_flags = held.posix_spawnattr_setflags
        self.at_flags.argtypes = [ctypes.c_void_p, ctypes.c_short]
        self.at_pgroup = held.posix_spawnattr_setpgroup
        self.at_sigdefault = held.posix_spawnattr_setsigdefault
        self.at_destroy = held.posix_spawnattr_destroy
        self.sigemptyset = held.sigemptyset
        self.sigaddset = held.sigaddset


def _load() -> _Libc | None:
    if not (sys.platform.startswith("linux") or sys.platform == "darwin"):
        return None
    try:
        return _Libc()
    except (OSError, AttributeError):
        return None


_libc: _Libc | None = None
_libc_tried = False


def _lib() -> _Libc | None:
    """libc's posix_spawn through ctypes, loaded on first use (ctypes costs start-up time
    where commands start by fork_exec)."""
    global _libc, _libc_tried
    if not _libc_tried:
        _libc_tried = True
        _libc = _load()
    return _libc


class _Prepared(threading.local):
    """Per thread (a call lasts until the child exec'ed, so a thread's arrays are free
    again when it returns): file actions by log fd and the attributes."""

    def __init__(self) -> None:
        self.actions: dict[int, Any] = {}
        self.attrs: dict[bool, Any] = {}


_prepared = _Prepared()


_null = -1
_null_lock = threading.Lock()


def _devnull() -> int:
    """An fd open on /dev/null for commands' stdin (not inherited as itself)."""
    global _null
    if _null < 0:
        with _null_lock:
            if _null < 0:
                _null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _null


def _actions(lib: _Libc, log_fd: int) -> Any:
    p = _prepared
    fa = p.actions.get(log_fd)
    if fa is None:
        if len(p.actions) >= 8:  # (log fds are few and reused; never let this grow)
            for old in p.actions.values():
                lib.fa_destroy(old)
            p.actions.clear()
        import ctypes

        fa = ctypes.create_string_buffer(_BUF)
        lib.fa_init(fa)
        lib.fa_dup2(fa, _devnull(), 0)  # (a dup: no path lookup in each child)
        lib.fa_dup2(fa, log_fd, 1)
        lib.fa_dup2(fa, log_fd, 2)
        p.actions[log_fd] = fa
    return fa


def _attr(lib: _Libc, new_group: bool) -> Any:
    p = _prepared
    at = p.attrs.get(new_group)
    if at is None:
        import ctypes

        at = ctypes.create_string_buffer(_BUF)
        lib.at_init(at)
        sigs = ctypes.create_string_buffer(_BUF)
        lib.sigemptyset(sigs)
        for sig in _DEFAULTS:
            lib.sigaddset(sigs, int(sig))
        lib.at_sigdefault(at, sigs)
        lib.at_flags(at, _SETSIGDEF | (_SETPGROUP if new_group else 0))
        if new_group:
            lib.at_pgroup(at, 0)
        p.attrs[new_group] = at
    return at


def release() -> None:
    """Free this thread's file actions and attributes (when the thread is done spawning)."""
    lib, p = _libc, _prepared
    if lib is None:
        return
    for fa in p.actions.values():
        lib.fa_destroy(fa)
    for at in p.attrs.values():
        lib.at_destroy(at)
    p.actions.clear()
    p.attrs.clear()


_FS = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())  # (as os.fsencode)


def _entry(k: str, v: str) -> bytes:
    entry = f"{k}={v}"
    if "\0" in entry:
        raise ValueError(f"environment variable {k!r} holds a NUL byte")
    return entry.encode(*_FS)  # (surrogate escapes back to their bytes)


def _envp(base: dict[str, str], extra: dict[str, str]) -> Any:
    """The NULL-terminated ``char *envp[]`` for ``base`` updated by ``extra`` (the array
    holds the bytes it points to)."""
    entries = _env_list(base, extra)
    import ctypes

    return (ctypes.c_char_p * (len(entries) + 1))(*entries)


def _encoded_args(argv: list[str]) -> list[bytes]:
    args = [a.encode(*_FS) for a in argv]
    if any(b"\0" in a for a in args):
        raise ValueError("a command argument holds a NUL byte")
    return args


def spawn(path: str, argv: list[str], base_env: dict[str, str], extra_env: dict[str, str],
          log_fd: int, new_group: bool = False) -> int:
    """Start ``path`` with ``argv`` and ``base_env`` updated by ``extra_env``; stdin from
    /dev/null, stdout and stderr to ``log_fd``; in a process group of its own when
    ``new_group``. Returns the pid; raises OSError when it cannot start (ValueError for a
    NUL byte in an argument or variable)."""
    if _method == "fork_exec":
        return _spawn_vfork(path, argv, base_env, extra_env, log_fd, new_group)
    lib = _lib() if _method == "ctypes" else None
    if lib is None:
        return os.posix_spawn(
            path, argv, {**base_env, **extra_env},
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2)],
            setsigdef=_DEFAULTS, **({"setpgroup": 0} if new_group else {}),  # type: ignore[arg-type]
        )
    args = _encoded_args(argv)
    import ctypes

    c_argv = (ctypes.c_char_p * (len(args) + 1))(*args)
    pid = ctypes.c_int(0)
    err = lib.spawn(ctypes.byref(pid), path.encode(*_FS), _actions(lib, log_fd),
                    _attr(lib, new_group), c_argv, _envp(base_env, extra_env))
    if err:
        raise OSError(err, os.strerror(err), path)
    return pid.value


def wait_exited(pid: int) -> None:
    """Block until the child ``pid`` has exited, without reaping it. While it is not reaped,
    neither its pid nor its process group id can go to another process, so a signal that
    races its end (a timeout, a stop) cannot reach a stranger: clear what refers to the pid,
    then reap it with ``os.waitpid``."""
    try:  # noqa: SIM105 (per task: a bare try costs less than contextlib.suppress)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # (already reaped by someone else: waitpid will say so)
        pass


def _known_fork_exec() -> Any:
    """``_posixsubprocess.fork_exec`` where its 23 arguments are known, else None."""
    if (sys.implementation.name != "cpython" or not sys.platform.startswith("linux")
            or not (3, 11, 6) <= sys.version_info < (3, 14)):  # (elsewhere: no vfork, the GIL
        return None  # held across it, or other arguments)
    try:
        import _posixsubprocess
    except ImportError:
        return None
    return getattr(_posixsubprocess, "fork_exec", None)


_fork_exec = _known_fork_exec()
#: how commands start: "fork_exec", "ctypes" or "posix_spawn" (see the module's text)
_method = "fork_exec" if _fork_exec is not None else "ctypes" if _lib() else "posix_spawn"


class _EnvList(threading.local):
    """Per thread: the environment's entries, kept from task to task; the extra variables
    have fixed places, rewritten only when their value changed (most do not)."""

    def __init__(self) -> None:
        self.key: tuple[int, tuple[str, ...]] | None = None
        self.base_ref: Any = None
        self.entries: list[bytes] = []
        self.places: dict[str, int] = {}  # extra name -> index in entries
        self.values: dict[str, str] = {}  # extra name -> the value its entry holds


_env_lists = _EnvList()


def _env_list(base: dict[str, str], extra: dict[str, str]) -> list[bytes]:
    """``base`` updated by ``extra`` as ``KEY=value`` bytes: the base part encoded once per
    thread (and set of extra names), an extra entry again only when its value changed.
    The list is this thread's and changes with its next call: use it at once."""
    p = _env_lists
    key = (id(base), tuple(extra))
    if p.key != key:
        p.key = None  # (until rebuilt: _entry raises for a NUL byte)
        entries = [_entry(k, v) for k, v in base.items() if k not in extra]
        places, values = {}, {}
        for k, v in extra.items():
            places[k], values[k] = len(entries), v
            entries.append(_entry(k, v))
        p.entries, p.places, p.values = entries, places, values
        p.key, p.base_ref = key, base  # (held: its id stays its own)
        return entries
    entries, values = p.entries, p.values
    for k, v in extra.items():
        if values[k] != v:
            entries[p.places[k]] = _entry(k, v)
            values[k] = v
    return entries


def _spawn_vfork(path: str, argv: list[str], base_env: dict[str, str],
                 extra_env: dict[str, str], log_fd: int, new_group: bool) -> int:
    args = _encoded_args(argv)
    env = _env_list(base_env, extra_env)
    r, w = os.pipe2(os.O_CLOEXEC)  # the child writes why it could not exec
    try:
        try:
            pid = _fork_exec(  # type: ignore[misc]
                args, [path.encode(*_FS)], False, (), None, env,  # no cwd: this process's
                _devnull(), -1, -1, log_fd, -1, log_fd,  # stdin; stdout, stderr to the log
                r, w, True, False, 0 if new_group else -1,  # default SIGPIPE...; pgroup
                None, None, None, -1, None, True)  # gid, groups, uid, umask, preexec, vfork
        finally:
            os.close(w)
        data = b""  # (nothing once the child exec'ed: the pipe closed on exec)
        while chunk := os.read(r, 512):
            data += chunk
    finally:
        os.close(r)
    if data:  # "OSError:<errno in hex>:<text>"
        os.waitpid(pid, 0)
        _, code, text = [*data.split(b":", 2), b"", b""][:3]
        try:
            err = int(code, 16)
        except ValueError:
            err = 0
        raise OSError(err, os.strerror(err) if err else text.decode(errors="replace"), path)
    return pid
