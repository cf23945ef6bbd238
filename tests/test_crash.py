"""Crash test: the controller is SIGKILLed at random moments and restarted.

Every task must run to completion exactly once, except those in flight at a kill; no task
folder may hold a torn result; the final results equal an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import kill9_when
from test_run import shoal_cmd

N = 300

EXPERIMENT = """
import os, random, time
LEDGER = {ledger!r}

exp = shoal.Experiment("crash", grid=shoal.Grid(i=range({n})))

def note(line):
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (line + "\\n").encode())
    os.close(fd)

@exp.step(per=["i"])
def work(ctx, i):
    note(f"start {{i}}")
    time.sleep(random.uniform(0.005, 0.03))
    note(f"done {{i}}")
    return {{"square": i * i}}

@exp.gather(per=[], over=work)
def total(ctx, runs):
    return {{"sum": int(runs.square.sum()), "n": len(runs)}}
"""


def ledger_ids(path: Path, kind: str) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines()
            if line.startswith(kind + " ")]


def results(root: Path) -> dict[int, dict]:
    out = {}
    for p in (root / "work").glob("i=*/.shoal-result.json"):
        doc = json.loads(p.read_text())  # a torn file would raise here
        out[doc["params"]["i"]] = doc["metrics"]
    return out


def test_sigkill_controller_five_times(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    path = tmp_path / "experiment.py"
    path.write_text("import shoal\n" + EXPERIMENT.format(ledger=str(ledger), n=N))
    root = tmp_path / "runs"
    rng = random.Random(1234)
    in_flight: set[int] = set()
    cmd = [*shoal_cmd(), "run", str(path), "-j", "2", "--progress", "none"]
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.4, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)  # let the workers' death signal land
        started = set(ledger_ids(ledger, "start"))
        in_flight |= started - set(results(root))
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr

    done = ledger_ids(ledger, "done")
    assert set(done) == set(range(N))
    twice = {i for i in set(done) if done.count(i) > 1}
    assert twice <= in_flight, (sorted(twice), sorted(in_flight))
    assert len(in_flight) <= 5 * 2 + 5  # a few per kill at -j 2, not a rerun of everything

    got = results(root)
    assert got == {i: {"square": i * i} for i in range(N)}
    for p in root.rglob("*.tmp"):
        raise AssertionError(f"temp file left behind: {p}")
    total = json.loads((root / "total/.shoal-result.json").read_text())["metrics"]
    assert total == {"sum": sum(i * i for i in range(N)), "n": N}

    status = subprocess.run([*shoal_cmd(), "status", str(path), "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["done"] == N + 1


def test_a_run_whose_state_folder_vanishes_stops_cleanly(write_exp, tmp_path) -> None:
    """`rm -rf runs/.shoal` mid-run took the lock with it: a second `shoal run` started
    beside the first, and tasks ran twice."""
    import shutil
    import subprocess
    import time

    from test_run import shoal_cmd

    path = write_exp("""
        import time
        exp = shoal.Experiment("v", grid=shoal.Grid(i=range(40)))

        @exp.step(per=["i"])
        def slow(ctx, i):
            time.sleep(0.5)
            return {"i": i}
    """)
    proc = subprocess.Popen([*shoal_cmd(), "run", str(path), "-j", "2", "--progress", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list((tmp_path / "runs/slow").glob("*/.shoal-result.json")):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        shutil.rmtree(tmp_path / "runs/.shoal")
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    assert "vanished during the run" in err and "Traceback" not in err
    done = len(list((tmp_path / "runs/slow").glob("*/.shoal-result.json")))
    assert done < 40  # it stopped, it did not run everything
    res = subprocess.run([*shoal_cmd(), "status", str(path), "--rescan"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*shoal_cmd(), "run", str(path), "-j", "2", "--progress", "none"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and f"{40 - done} done" in res.stderr, res.stderr


def test_a_full_disk_ends_the_run_with_one_line_and_a_rerun_after_freeing_space_completes(
        tmp_path) -> None:
    """A disk that filled mid-run: tracebacks from the workers' error handlers, then the
    controller died on `database or disk is full` with nothing saying why."""
    import os
    import subprocess

    import pytest

    from test_run import shoal_cmd

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        (disk / "experiment.py").write_text(
            "import shoal\n"
            "exp = shoal.Experiment('full', grid=shoal.Grid(i=range(60)))\n\n"
            "@exp.step(per=['i'])\n"
            "def write(ctx, i):\n"
            "    (ctx.out / 'blob.bin').write_bytes(b'x' * 60_000)\n"
            "    return {'i': i}\n")
        cmd = [*shoal_cmd(), "run", str(disk), "-j", "2", "--progress", "none"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr
        assert "cannot write the store" in res.stderr and "is its disk full?" in res.stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        res = subprocess.run([*shoal_cmd(), "status", str(disk), "--rescan"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        res = subprocess.run([*shoal_cmd(), "plan", str(disk), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert '"run": 0' in res.stdout
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.parametrize("kind", ["command", "function"])
def test_what_a_task_started_dies_with_a_killed_controller(write_exp, tmp_path,
                                                            kind: str) -> None:
    """kill -9 of `shoal run` left a command (and what a function task started) running: it
    went on writing into the folder of the next run's attempt of the same task."""
    import subprocess
    import time

    from test_run import shoal_cmd

    body = {
        "command": """
            exp.command("slow", "echo started > {out}/started; sleep 3; "
                        "echo attempt=$SHOAL_ATTEMPT >> {out}/../x_{k}", per=["k"])
        """,
        "function": """
            import subprocess
            @exp.step(per=["k"])
            def slow(ctx, k):
                subprocess.Popen(["sh", "-c", f"sleep 3; echo attempt={ctx.attempt} >> "
                                  f"{ctx.out}/../x_{k}"], start_new_session=True)
                (ctx.out / "started").write_text("yes")
                import time
                time.sleep(3)
        """,
    }[kind]
    path = write_exp('exp = shoal.Experiment("k", grid=shoal.Grid(k=[0]))\n'
                     + __import__("textwrap").dedent(body))
    kill9_when(["run", str(path), "--progress", "none"],
               (tmp_path / "runs/slow/k=0/started").exists)
    res = subprocess.run([*shoal_cmd(), "run", str(path), "--progress", "none"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    time.sleep(3.5)  # (what the killed run started would have written by now)
    assert (tmp_path / "runs/slow/x_0").read_text() == "attempt=2\n"
