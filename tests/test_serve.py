"""shoal serve: the token and path checks (HTTP against a server in this process), and the
page in a real headless Chromium during a real run: counts rise to done, a failing task's
log tail appears, a request without the token is refused."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_run import run, shoal_cmd

EXP = """
import time
exp = shoal.Experiment("dash", grid=shoal.Grid(i=range(6)))

@exp.step(per=["i"])
def work(ctx, i):
    time.sleep(float(__import__("os").environ.get("NAP", "0")))
    if i == 3:
        print("about to fail")
        raise RuntimeError("planned failure")
    return {"score": i * 1.5}
"""


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.fixture
def served(write_exp, load, tmp_path: Path):
    """A finished run (one failure) served on a free port in this process."""
    from shoal.api.dashboard import Dashboard
    from shoal.api.serve import Server

    path = write_exp(EXP)
    run(path)
    server = Server(Dashboard(load(path)), "127.0.0.1", 0, "s3cret")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_every_request_needs_the_token(served) -> None:
    base, _ = served
    assert _get(f"{base}/")[0] == 401
    assert _get(f"{base}/api/state")[0] == 401
    assert _get(f"{base}/?token=wrong")[0] == 403
    assert _get(f"{base}/api/state?token=s3cre")[0] == 403
    code, body, headers = _get(f"{base}/?token=s3cret")
    assert code == 200 and "<title>shoal serve</title>" in body
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", body)  # (nothing from outside)
    assert "Set-Cookie" not in headers  # (a cookie would go to every port of localhost)
    assert _get(f"{base}/api/state", {"Cookie": "shoal_token=s3cret"})[0] == 401
    assert _get(f"{base}/?token=s3cret", {"Host": "evil.example:80"})[0] == 403  # (rebinding)
    assert _get(f"{base}/?token=s3cret", {"Host": "evil.example"})[0] == 403
    assert _get(f"{base}/?token=s3cret", {"Host": "localhost:9000"})[0] == 200  # (ssh -L 9000)


def test_logs_are_read_by_task_id_never_by_path(served) -> None:
    base, tmp_path = served
    code, body, _ = _get(f"{base}/log?task=work/i=3&token=s3cret")
    assert code == 200 and "planned failure" in body and body.startswith("=== work[i=3]")
    for bad in ("work/../../../etc/passwd", "work/i=3/../../..", "../work/i=3", "/etc/passwd",
                "nosuch/i=1", "work/i=99"):
        assert _get(f"{base}/log?task={urllib.request.quote(bad)}&token=s3cret")[0] == 404, bad
    log = tmp_path / "runs/work/i=4/.shoal.log"
    log.unlink(missing_ok=True)
    log.symlink_to("/etc/passwd")  # a link in a task folder that points outside the root
    code, body, _ = _get(f"{base}/log?task=work/i=4&token=s3cret")
    assert code == 403 and "root:" not in body


def test_state_speaks_the_task_states(served) -> None:
    import json

    base, _ = served
    doc = json.loads(_get(f"{base}/api/state?token=s3cret")[1])
    assert doc["steps"]["work"]["done"] == 5 and doc["steps"]["work"]["failed"] == 1
    assert doc["failures"][0]["task"] == "work/i=3"
    assert "planned failure" in doc["failures"][0]["log_tail"]
    assert doc["controller"] == "none" and doc["running"] == []


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _dom(browser: str, url: str, profile: Path) -> str:
    res = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_the_dashboard_follows_a_real_run_in_chromium(write_exp, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("SHOAL_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (SHOAL_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    path = write_exp(EXP)
    env = {**os.environ, "NAP": "1.2"}
    runner = subprocess.Popen([*shoal_cmd(), "run", str(path), "-j", "1", "--progress", "none"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server = subprocess.Popen([*shoal_cmd(), "serve", str(path), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        deadline = time.time() + 60
        while not url and time.time() < deadline:
            line = server.stderr.readline()
            found = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", line)
            url = found.group(0) if found else ""
        assert url, "shoal serve printed no URL"
        while '"done": 0,' in _get(url.replace("/?", "/api/state?"))[1]:  # (the store
            assert runner.poll() is None and time.time() < deadline  # is written in beats)
            time.sleep(0.2)
        early = _dom(browser, url, tmp_path / "chrome1")
        assert 'data-loaded="1"' in early, early[-3000:]
        first = int(re.search(r'data-done="(\d+)"', early).group(1))
        assert 1 <= first < 5 and "a controller is running" in early
        runner.wait(timeout=60)
        late = _dom(browser, url, tmp_path / "chrome2")
        assert 'data-done="5"' in late  # counts rose to done
        assert "planned failure" in late and "about to fail" in late  # the failure's tail
        assert "whole log" in late
        base = url.split("/?")[0]
        assert _get(f"{base}/api/state")[0] == 401  # (no token: refused)
    finally:
        runner.kill()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_on_every_address_any_host_name_is_answered_but_the_token_still_needed(
        write_exp, load) -> None:
    """--host 0.0.0.0: reached by the machine's name (Host: node17:PORT), so the loopback
    Host check is off there; the token is not."""
    from shoal.api.dashboard import Dashboard
    from shoal.api.serve import Server

    path = write_exp(EXP)
    server = Server(Dashboard(load(path)), "0.0.0.0", 0, "tok")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        host = {"Host": f"node17:{server.server_address[1]}"}
        assert _get(f"{base}/?token=tok", host)[0] == 200
        assert _get(f"{base}/", host)[0] == 401
    finally:
        server.shutdown()
        server.server_close()


def test_a_reader_s_instant_shared_lock_does_not_fail_a_starting_run(tmp_path: Path) -> None:
    """Review: `shoal serve` (and `status`) probe the controller's lock with a shared flock
    every poll; a `shoal run` starting in that instant failed with "another controller"."""
    import fcntl

    from shoal.state.lock import RootLock

    (tmp_path / ".shoal").mkdir()
    probe = os.open(tmp_path / ".shoal" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(probe, fcntl.LOCK_SH)  # (what held_by_other() takes, for an instant)
    release = threading.Timer(0.15, lambda: os.close(probe))
    release.start()
    lock = RootLock(tmp_path).acquire()  # waits the instant out
    try:
        assert RootLock(tmp_path).held_by_other()
    finally:
        lock.release()
        release.join()
