"""Command steps on the local backend: the spawn, the pipelined runner threads, their
wake-ups, and what a command task leaves in its folder."""

from __future__ import annotations

import errno
import itertools
import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shoal.backends.local.commands import WAKE_EVERY, CommandRunner, _Bundle
from shoal.state import resultfile
from shoal.state.status import Outcome, TaskStatus
from shoal.worker import spawn
from shoal.worker.tasklog import TaskLog
from shoal.worker.taskspec import TaskSpec
from test_run import run


@pytest.fixture
def spawner():
    """How commands start: ``os.posix_spawn`` (the standard library)."""
    return spawn.spawn


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_spawn_environment_output_and_process_group(spawner, tmp_path: Path) -> None:
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    base = {"PATH": os.environ["PATH"], "KEEP": "base", "OVER": "base"}
    script = 'echo "$KEEP $OVER $EXTRA"; echo err >&2; cat; ps -o pgid= -p $$'
    for extra in ({"OVER": "task", "EXTRA": "one"}, {"OVER": "again", "EXTRA": "two"}):
        pid = spawner("/bin/sh", ["sh", "-c", script], base, extra, fd, True)
        assert _wait(pid) == 0
    pid = spawner("/bin/sh", ["sh", "-c", "exit 3"], base, {}, fd, False)
    assert _wait(pid) == 3
    os.close(fd)
    lines = log.read_text().split()
    # the task's variables override the base ones, stderr joins stdout, stdin is empty,
    # and the command leads a process group of its own (so a kill reaches its children)
    assert lines[:4] == ["base", "task", "one", "err"]
    assert lines[5:9] == ["base", "again", "two", "err"]
    assert int(lines[4]) != os.getpgrp() and int(lines[9]) != os.getpgrp()


def test_spawn_of_a_missing_program_raises(spawner, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o644)
    with pytest.raises(OSError) as err:
        spawner(str(tmp_path / "no-such-program"), ["x"], {}, {}, fd, True)
    os.close(fd)
    assert "No such file" in str(err.value)


def test_wake_ups_for_freed_slots_and_failures_and_after_a_drain(tmp_path: Path) -> None:
    """A bundle's successes wait for the next wake-up; its last outcome (a slot frees) and
    any failure wake the controller; a wake-up is written once until the controller drains
    (an outcome posted after a drain must wake it again, or it sleeps on it)."""
    runner = CommandRunner(str(tmp_path), {})
    b = _Bundle([], [TaskLog(str(tmp_path))], pending=5)

    def readable() -> bool:
        return bool(select.select([runner.fileno()], [], [], 0)[0])

    def post(n: int, status: str = "done") -> None:
        runner._post(b, Outcome("c", f"i={n}", n, TaskStatus(status)))

    post(1)
    post(2)
    assert not readable()  # (successes inside a bundle: no hurry)
    post(3, "failed")
    assert readable()
    assert [o.attempt for o in runner.drain()] == [1, 2, 3]
    assert not readable()
    post(4)
    assert not readable()
    post(5)  # the bundle's last: its slot is free
    assert readable()
    assert [o.attempt for o in runner.drain()] == [4, 5]
    assert b.pending == 0
    b.pending = WAKE_EVERY + 1
    for n in range(WAKE_EVERY - 1):
        post(n)
    assert not readable()
    post(99)  # every WAKE_EVERY outcomes, the controller ingests them
    assert readable()
    assert len(runner.drain()) == WAKE_EVERY
    runner.shutdown()


def test_unique_ids_differ_across_processes_and_do_not_repeat() -> None:
    ids = {resultfile.unique_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 16 for i in ids)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked child draws a prefix of its own
        os.write(w, resultfile.unique_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 64).decode()
    os.close(r)
    os.close(w)
    assert child[:10] != resultfile.unique_id()[:10]
    gen = resultfile._Ids()
    first = gen.prefix
    gen.count = itertools.count(0x1000000)  # the counter ran out: a new prefix, from 0
    assert gen() == f"{gen.prefix}000000" and gen.prefix != first

def _script_tasks(write_exp, tmp_path: Path, n: int, jobs: int, script: str,
                  args: str = ""):
    """`shoal run -j JOBS` of N command tasks `sh task.sh {i} ARGS` running ``script``."""
    (tmp_path / "task.sh").write_text(script)
    path = write_exp(f"""
        exp = shoal.Experiment("script", grid=shoal.Grid(i=range({n})))
        exp.command("c", "sh task.sh {{i}}{args}", per=["i"])
    """)
    return run(path, "-j", str(jobs))


def test_each_command_task_keeps_its_own_log(write_exp, tmp_path: Path) -> None:
    """Bundled commands start before the one before them is recorded (two scratch logs
    alternate): every task's log holds its own output, and silent tasks get none."""
    res = _script_tasks(write_exp, tmp_path, 120, 2,
                        'if [ $(($1 % 3)) = 0 ]; then echo "out $1"; echo "err $1" >&2; fi\n')
    assert res.returncode == 0, res.stderr
    for i in range(120):
        folder = tmp_path / f"runs/c/i={i}"
        assert (folder / ".shoal-result.json").exists()
        log = folder / ".shoal.log"
        if i % 3 == 0:
            assert _body(log, f"c[i={i}]") == f"out {i}\nerr {i}\n"
        else:
            assert not log.exists()


def test_command_checkpoints_go_on_success_and_stay_after_a_failure(write_exp, tmp_path):
    """A command's $SHOAL_CHECKPOINTS folder is removed once it succeeds (a rerun must not
    resume from it) and kept, claimed for the task's version, when it fails."""
    res = _script_tasks(write_exp, tmp_path, 8, 2,
                        'mkdir -p "$SHOAL_CHECKPOINTS" && echo 1 > "$SHOAL_CHECKPOINTS/c1"\n'
                        '[ $(($1 % 2)) = 0 ] || exit 1\n'
                        'echo \'{"ok": 1}\' > "$SHOAL_OUT/metrics.json"\n')
    assert res.returncode == 1
    for i in range(8):
        folder = tmp_path / f"runs/c/i={i}"
        ckpt = folder / resultfile.CHECKPOINTS
        if i % 2 == 0:
            doc = json.loads((folder / resultfile.RESULT).read_text())
            assert doc["metrics"] == {"ok": 1} and not ckpt.exists()
        else:
            assert not (folder / resultfile.RESULT).exists()
            assert (ckpt / "c1").exists() and len(list(ckpt.iterdir())) > 1  # (+ its claim)


def test_a_timeout_inside_a_bundle_of_commands(write_exp, tmp_path: Path) -> None:
    """A command killed inside a bundle fails alone; the commands queued behind it run
    afterwards with their first attempt; the store has no task left running."""
    (tmp_path / "task.sh").write_text(
        '[ "$1" != 150 ] || sleep 30\nprintf \'{"i": %s}\' "$1" > "$2/metrics.json"\n')
    path = write_exp("""
        exp = shoal.Experiment("cbundle", grid=shoal.Grid(i=range(300)))
        exp.command("c", "sh task.sh {i} {out}", per=["i"], timeout="1s")
    """)
    t0 = time.time()
    res = run(path, "-j", "2")
    assert res.returncode == 1
    assert time.time() - t0 < 25
    assert res.stderr.count("timeout after 1 s") == 1
    docs = {p.parent.name: json.loads(p.read_text())
            for p in (tmp_path / "runs/c").glob("*/.shoal-result.json")}
    assert len(docs) == 299 and "i=150" not in docs
    assert {d["attempt"] for d in docs.values()} == {1}
    assert all(d["metrics"] == {"i": int(k[2:])} for k, d in docs.items())
    assert len({d["run_id"] for d in docs.values()}) == 299
    with sqlite3.connect(tmp_path / "runs/.shoal/state.db") as db:
        statuses = dict(db.execute("SELECT status, count(*) FROM tasks GROUP BY status"))
    assert statuses == {"done": 299, "failed": 1}


def test_a_rerun_task_is_stored_running_before_its_folder_is_emptied(write_exp, tmp_path):
    """A task done before and run again (its version changed) must never leave the store
    saying "done" beside a folder emptied for the new attempt (a controller killed then
    would find it done): its "running" record is in the store before its command starts."""
    (tmp_path / "peek.py").write_text(
        "import sqlite3, sys\n"
        "db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
        "row = db.execute('SELECT status FROM tasks WHERE step=? AND key=?',\n"
        "                 ('c', sys.argv[2])).fetchone()\n"
        "open(sys.argv[3], 'w').write(row[0] if row else 'none')\n")
    body = """
        exp = shoal.Experiment("guard", grid=shoal.Grid(i=range(6)))
        exp.command("c", "{{python}} peek.py runs/.shoal/state.db i={{i}} {{out}}/seen",
                    per=["i"], version="VERSION")
    """
    path = write_exp(body.replace("VERSION", "1").replace("{{", "{").replace("}}", "}"))
    assert run(path, "-j", "2").returncode == 0
    path = write_exp(body.replace("VERSION", "2").replace("{{", "{").replace("}}", "}"))
    res = run(path, "-j", "2")
    assert res.returncode == 0, res.stderr
    seen = {p.parent.name: p.read_text() for p in (tmp_path / "runs/c").glob("*/seen")}
    assert seen == {f"i={i}": "running" for i in range(6)}


def test_a_long_task_inside_a_bundle_shows_as_running(write_exp, tmp_path) -> None:
    """A bundle's later members are not stored as running when it starts; one that runs
    for a while is, so that `shoal status` shows it."""
    (tmp_path / "peek.py").write_text(
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
        "seen = 'none'\n"
        "for _ in range(100):\n"
        "    row = db.execute('SELECT status FROM tasks WHERE step=? AND key=?',\n"
        "                     ('c', 'i=30')).fetchone()\n"
        "    seen = row[0] if row else 'none'\n"
        "    if seen == 'running':\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "open(sys.argv[2], 'w').write(seen)\n")
    res = _script_tasks(write_exp, tmp_path, 40, 1,
                        '[ "$1" != 30 ] || "$2" peek.py runs/.shoal/state.db "$SHOAL_OUT/seen"\n',
                        args=" {python}")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "runs/c/i=30/seen").read_text() == "running"


@pytest.mark.parametrize("links", [True, False])
def test_task_log_is_live_in_place_and_absent_when_silent(tmp_path: Path, monkeypatch, links):
    """The scratch log is hard-linked (or, where links are refused, renamed) into the task
    folder while the attempt runs; a silent attempt leaves no log and gives the scratch file
    back; one that wrote keeps its log, and the next task gets a new scratch file."""
    if not links:
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EPERM, "no hard links here")
        monkeypatch.setattr(os, "link", refuse)
    log = TaskLog(str(tmp_path / "scratch"), "-t")
    folders = [tmp_path / f"t{i}" for i in range(3)]
    for f in folders:
        f.mkdir()
    fd, fresh = log.open(str(folders[0]), "", new_folder=True)
    assert fresh and (folders[0] / ".shoal.log").exists()  # live in place
    log.close(fd, str(folders[0]), fresh)
    assert not (folders[0] / ".shoal.log").exists()
    fd, fresh = log.open(str(folders[1]), "", new_folder=True)
    os.write(fd, b"hello\n")
    log.close(fd, str(folders[1]), fresh)
    assert (folders[1] / ".shoal.log").read_text() == "hello\n"
    fd, fresh = log.open(str(folders[2]), "", new_folder=True)
    log.close(fd, str(folders[2]), fresh)
    assert not (folders[2] / ".shoal.log").exists()
    assert (folders[1] / ".shoal.log").read_text() == "hello\n"  # (not the next one's)
    fd, fresh = log.open(str(folders[1]), "=== attempt 2 ===\n")  # a later attempt appends
    assert not fresh
    os.write(fd, b"again\n")
    log.close(fd, str(folders[1]), fresh)
    assert (folders[1] / ".shoal.log").read_text() == "hello\n=== attempt 2 ===\nagain\n"


def test_a_deferred_task_log_is_placed_late_or_at_the_end_and_only_if_written(tmp_path):
    """A deferred log (short commands) stays out of the task folder until place() (a command
    that runs a while) or close(); a silent task never gets one, and the scratch file serves
    the next task; one that wrote keeps its log, also where its scratch file went away."""
    scratch = tmp_path / "scratch"
    log = TaskLog(str(scratch), "-t")
    folders = [tmp_path / f"t{i}" for i in range(5)]
    for f in folders:
        f.mkdir()
    logs = [f / ".shoal.log" for f in folders]
    fd, fresh = log.open(str(folders[0]), "", new_folder=True, defer=True)
    assert fresh and not logs[0].exists()
    log.close(fd, str(folders[0]), fresh)  # silent: nothing, and the scratch file stays
    assert not logs[0].exists() and fd == log._fd
    fd, fresh = log.open(str(folders[1]), "", new_folder=True, defer=True)
    os.write(fd, b"short\n")
    log.close(fd, str(folders[1]), fresh)  # wrote: moved into its folder at the end
    assert logs[1].read_text() == "short\n" and not logs[0].exists()
    fd, fresh = log.open(str(folders[2]), "", new_folder=True, defer=True)
    log.place()  # it runs a while: live in its folder
    assert logs[2].exists()
    os.write(fd, b"long\n")
    assert logs[2].read_text() == "long\n"
    log.close(fd, str(folders[2]), fresh)
    assert logs[2].read_text() == "long\n"
    fd, fresh = log.open(str(folders[3]), "", new_folder=True, defer=True)
    log.place()
    log.close(fd, str(folders[3]), fresh)  # placed, then silent: removed again
    assert not logs[3].exists()
    fd, fresh = log.open(str(folders[4]), "", new_folder=True, defer=True)
    for f in scratch.iterdir():  # (its name went: the content is copied)
        f.unlink()
    os.write(fd, b"kept\n")
    log.close(fd, str(folders[4]), fresh)
    assert logs[4].read_text() == "kept\n"
    assert [p.read_text() for p in logs if p.exists()] == ["short\n", "long\n", "kept\n"]


def test_a_deferred_log_where_links_are_refused_and_after_an_aborted_open(
    tmp_path: Path, monkeypatch
) -> None:
    """Where hard links are refused, place() renames the scratch file into the folder (and
    a silent task gives it back); a deferred open never followed by close (its task failed
    to prepare) leaves nothing that a later place() could link into the wrong folder."""
    log = TaskLog(str(tmp_path / "scratch"), "-t")
    a, b, c = (tmp_path / n for n in "abc")
    for f in (a, b, c):
        f.mkdir()
    (b / ".shoal.log").write_text("old\n")
    log.open(str(a), "", new_folder=True, defer=True)  # (aborted: never closed)
    fd, fresh = log.open(str(b), "=== attempt 2 ===\n")  # appends to b's own log
    log.place()
    assert not (a / ".shoal.log").exists() and not fresh
    log.close(fd, str(b), fresh)
    assert (b / ".shoal.log").read_text() == "old\n=== attempt 2 ===\n"

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(os, "link", refuse)
    fd, fresh = log.open(str(c), "", new_folder=True, defer=True)
    log.place()
    assert (c / ".shoal.log").exists()  # live in place, by a rename
    log.close(fd, str(c), fresh)  # silent: back to the scratch slot
    assert not (c / ".shoal.log").exists() and os.path.exists(log.scratch)
    fd, fresh = log.open(str(c), "", new_folder=True, defer=True)
    log.place()
    os.write(fd, b"kept\n")
    log.close(fd, str(c), fresh)
    assert (c / ".shoal.log").read_text() == "kept\n"


def test_a_long_command_s_log_is_in_its_folder_while_it_runs(write_exp, tmp_path) -> None:
    """Short commands' logs are put in place at their end; one that runs a while has its log
    in its folder while it still runs (`shoal logs` can follow it)."""
    res = _script_tasks(
        write_exp, tmp_path, 3, 1,
        'echo "started $1"\n'
        'if [ "$1" = 0 ]; then\n'
        '  for k in $(seq 100); do [ -e "$SHOAL_OUT/.shoal.log" ] && break; sleep 0.1; done\n'
        '  [ -e "$SHOAL_OUT/.shoal.log" ] && echo placed || echo "not placed"\n'
        'fi\n')
    assert res.returncode == 0, res.stderr
    assert _body(tmp_path / "runs/c/i=0/.shoal.log", "c[i=0]") == "started 0\nplaced\n"
    for i in (1, 2):
        assert _body(tmp_path / f"runs/c/i={i}/.shoal.log", f"c[i={i}]") == f"started {i}\n"


def test_task_log_survives_its_scratch_file_being_removed(tmp_path: Path) -> None:
    """A new `shoal run` clears the scratch folder; a task log whose scratch file went makes
    a new one instead of failing every later task."""
    scratch = tmp_path / "scratch"
    log = TaskLog(str(scratch), "-t")
    for i in range(2):
        (tmp_path / f"t{i}").mkdir()
    fd, fresh = log.open(str(tmp_path / "t0"), "", new_folder=True)
    log.close(fd, str(tmp_path / "t0"), fresh)
    for f in scratch.iterdir():
        f.unlink()
    fd, fresh = log.open(str(tmp_path / "t1"), "", new_folder=True)
    os.write(fd, b"still logged\n")
    log.close(fd, str(tmp_path / "t1"), fresh)
    assert (tmp_path / "t1/.shoal.log").read_text() == "still logged\n"


def test_output_of_a_command_left_running_stays_in_its_own_log(write_exp, tmp_path) -> None:
    """A silent command that leaves a process behind (which writes later) keeps its log:
    the next task's log never gets that output."""
    res = _script_tasks(write_exp, tmp_path, 40, 1,
                        'if [ "$1" = 0 ]; then (sleep 0.3; echo late from 0) & fi\n')
    assert res.returncode == 0, res.stderr
    time.sleep(0.6)
    logs = {p.parent.name: p.read_text() for p in (tmp_path / "runs/c").glob("*/.shoal.log")}
    assert set(logs) == {"i=0"} and logs["i=0"].endswith("$ sh task.sh 0\nlate from 0\n")


def test_commands_get_sigpipe_back(spawner, tmp_path: Path) -> None:
    """Python ignores SIGPIPE; a command gets it back at its default (as with subprocess),
    so `yes | head -n 1` ends quietly instead of `yes` writing to a closed pipe forever."""
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = spawner("/bin/sh", ["sh", "-c", "yes | head -n 1"], {"PATH": os.environ["PATH"]},
                  {}, fd, True)
    assert _wait(pid) == 0
    os.close(fd)
    assert log.read_text() == "y\n"


RUN_STOPPED = '''
import json, os, signal, sys, threading
from shoal.worker.command import run_command
from shoal.worker.taskspec import TaskSpec
root = sys.argv[1]
spec = TaskSpec(experiment="e", target="x.py", config={}, step="c", key="i=0", params={"i": 0},
                fingerprint="f", code="c", inputs=None, attempt=1, out=f"{root}/c/i=0",
                root=root, cwd=root, cpus=1, gpus=0, devices=[], mem_mb=None, time_s=None,
                timeout_s=None, needs={}, gather=None, token="t", stage=[], stage_dir=None,
                command="sleep 30", argv=["sleep", "30"])
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR2)).start()
print(json.dumps(run_command(spec).status))
'''


def test_a_command_stopped_on_request_in_an_element_is_interrupted(tmp_path: Path) -> None:
    """In a Slurm element (run_command), a command ended by a stop request (SIGUSR2 before
    the time limit, preemption) is recorded interrupted — it goes out again, using no
    retry — not failed."""
    script = tmp_path / "stopped.py"
    script.write_text(RUN_STOPPED)
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=60, start_new_session=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == "interrupted"
    err = json.loads((tmp_path / "c/i=0/.shoal-error.json").read_text())
    assert err["status"] == "interrupted" and "SIGTERM" in err["error"]


def _cmd_spec(root: Path, i: int) -> TaskSpec:
    return TaskSpec(experiment="e", target="x.py", config={}, step="c", key=f"i={i}",
                    params={"i": i}, fingerprint="f", code="c", inputs=None, attempt=1,
                    out=f"{root}/c/i={i}", root=str(root), cwd=str(root), command="true",
                    argv=["true"], token=f"t{i}")


def _drain_all(runner: CommandRunner, n: int) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        select.select([runner.fileno()], [], [], 0.2)
        got += runner.drain()
    return got


def test_a_runner_thread_and_its_logs_serve_the_next_bundle(tmp_path: Path) -> None:
    """A thread that ran a bundle waits for the next one (no thread start per bundle, its
    spawn state kept); the bundle's scratch logs go back before its last outcome is posted,
    so the next bundle makes no new scratch file; shutdown ends the waiting threads."""
    (tmp_path / "c").mkdir()
    runner = CommandRunner(str(tmp_path), {"PATH": os.environ["PATH"]})
    for round_ in range(3):
        specs = [_cmd_spec(tmp_path, 10 * round_ + j) for j in range(4)]
        runner.start(specs)
        got = _drain_all(runner, len(specs))
        assert sorted(o.key for o in got) == sorted(s.key for s in specs)
        assert all(o.status == "done" for o in got)
        assert len(runner._threads) == 1
        assert len(os.listdir(tmp_path / ".shoal/scratch")) == 2
    for j in (0, 10, 20):
        assert (tmp_path / f"c/i={j}/.shoal-result.json").exists()
    runner.shutdown()
    assert not any(t.is_alive() for t in runner._threads)


def test_a_command_is_forgotten_before_it_is_reaped(tmp_path: Path, monkeypatch) -> None:
    """Bug: a command was reaped before its runner (or a Slurm element's stop forwarding)
    forgot its pid, so a kill or stop in between could signal the process group of an
    unrelated process that took the pid. Now nothing refers to a pid when it is reaped."""
    from shoal.worker import command as C

    (tmp_path / "c").mkdir()
    runner = CommandRunner(str(tmp_path), {"PATH": os.environ["PATH"]})
    real_waitpid = os.waitpid
    reaped: list[int] = []
    still_known: list[int] = []

    def waitpid(pid: int, options: int) -> tuple[int, int]:
        if any(b.pid == pid for b in runner.bundles) or C._child == pid:
            still_known.append(pid)
        reaped.append(pid)
        return real_waitpid(pid, options)

    monkeypatch.setattr(os, "waitpid", waitpid)
    specs = [_cmd_spec(tmp_path, j) for j in range(6)]
    runner.start(specs)
    got = _drain_all(runner, len(specs))
    assert all(o.status == "done" for o in got)
    # the same for a command run by a worker or a Slurm element (its stop forwarding)
    assert C.run_command(_cmd_spec(tmp_path, 9), {"PATH": os.environ["PATH"]}).status \
        == "done"
    runner.shutdown()
    assert len(reaped) == 7
    assert still_known == []


def _body(log: Path, label: str) -> str:
    """A command task's log after its header (``=== LABEL attempt 1 ...``, ``$ command``)."""
    head, command, rest = log.read_text().split("\n", 2)
    assert head.startswith(f"=== {label} attempt 1 on ") and command.startswith("$ ")
    return rest


def test_every_attempt_s_log_starts_with_its_header_and_a_silent_one_leaves_none(
        tmp_path: Path) -> None:
    """Bug: the first attempt's log had no header (the second had one)."""
    log = TaskLog(str(tmp_path / "scratch"), "-h")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    fd, fresh = log.open(str(a), "=== a attempt 1 ===\n", new_folder=True)
    log.close(fd, str(a), fresh)  # wrote nothing but the header: no log kept
    assert not (a / ".shoal.log").exists()
    fd, fresh = log.open(str(b), "=== b attempt 1 ===\n", new_folder=True)
    os.write(fd, b"out\n")
    log.close(fd, str(b), fresh)
    assert (b / ".shoal.log").read_text() == "=== b attempt 1 ===\nout\n"  # (not a's)
