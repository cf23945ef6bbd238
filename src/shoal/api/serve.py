"""``shoal serve EXP``: the dashboard over HTTP, safe on a shared login node.

- It binds ``127.0.0.1`` by default (``ssh -L 8765:127.0.0.1:8765 login-node`` shows it on
  a laptop), and answers only requests whose ``Host`` is a loopback name, on any port (no
  DNS rebinding).
- Every request needs the random token printed with the URL (``?token=...``, as Jupyter
  does; the page carries it on to its requests and links, never in a cookie, which would
  go to every port of localhost): none is 401, a wrong one 403.
- It reads files only through task ids of the plan (``/log?task=STEP/KEY``), never a path
  from the request, and never follows a link out of the run root.
- Read-only: no lock, no writes (:mod:`shoal.api.dashboard`).

The standard library's ``http.server`` serves it (one thread per request): no extra
dependency. The page polls ``/api/state`` every two seconds.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shoal.api.dashboard import Dashboard
from shoal.api.dashboard_page import PAGE
from shoal.errors import ShoalError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_LOG = 20 * 1024 * 1024  # bytes of a log sent (its end)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, dashboard: Dashboard, host: str, port: int, token: str) -> None:
        self.dashboard = dashboard
        self.token = token
        #: Host names answered, whatever the port (``ssh -L 9000:...`` sends :9000):
        #: loopback only, so that a page elsewhere that resolves its own name to 127.0.0.1
        #: cannot reach it; empty: any (--host 0.0.0.0 and the like)
        self.hosts: set[str] = set()
        if host in LOOPBACK:
            self.hosts = {"localhost", "127.0.0.1", "[::1]"}
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.lock = threading.Lock()  # (one state at a time: the caches are shared)
        super().__init__((host, port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # (quiet: no access log)
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if self.server.hosts and _hostname(self.headers.get("Host")) not in self.server.hosts:
            return self._send(403, "text/plain", b"forbidden host\n")
        given = query.get("token", [""])[0]  # (in the URL only: a cookie would go to every
        if not given:  # port of localhost, other users' servers too)
            return self._send(401, "text/plain", b"a token is needed: open the URL that "
                              b"shoal serve printed (?token=...)\n")
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            return self._send(403, "text/plain", b"wrong token\n")
        extra: dict[str, str] = {}
        try:
            if url.path == "/":
                return self._send(200, "text/html; charset=utf-8", PAGE.encode(), extra)
            if url.path == "/api/state":
                with self.server.lock:
                    doc = self.server.dashboard.state()
                body = json.dumps(doc, default=str).encode()
                return self._send(200, "application/json", body, extra)
            if url.path == "/log":
                return self._log(query.get("task", [""])[0], extra)
        except ShoalError as exc:
            return self._send(404, "text/plain", f"{exc}\n".encode())
        except PermissionError as exc:
            return self._send(403, "text/plain", f"{exc}\n".encode())
        except Exception as exc:  # (shoal's own failure: said, and the next poll tries again)
            print(f"shoal: serve: {type(exc).__name__}: {exc}", file=sys.stderr)
            return self._send(500, "text/plain", f"{type(exc).__name__}: {exc}\n".encode())
        return self._send(404, "text/plain", b"not found\n")

    def _log(self, task: str, extra: dict[str, str]) -> None:
        with self.server.lock:
            path = self.server.dashboard.log_path(task)
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - MAX_LOG))
                body = fh.read()
        except FileNotFoundError:
            body = b"(this task wrote no log yet)\n"
        self._send(200, "text/plain; charset=utf-8", body, extra)

    def _send(self, code: int, kind: str, body: bytes,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self' 'unsafe-inline' data:")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def _hostname(header: str | None) -> str:
    """The name in a Host header, without its port (``[::1]`` kept in brackets)."""
    host = (header or "").strip().lower()
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def serve(exp: Any, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          ready: Any = None) -> None:
    """Serve the dashboard of ``exp`` until interrupted. ``port=0``: any free port.
    ``ready(url)`` is called once it listens (the CLI prints the URL)."""
    token = token or secrets.token_urlsafe(24)
    dashboard = Dashboard(exp)
    dashboard.plan()  # (a bad definition: one error before anything listens)
    try:
        server = Server(dashboard, host, port, token)
    except OSError as exc:
        raise ShoalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose "
                         "another --port (or --port 0: any free one)") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_address[1]}/?token={token}"
    if ready is not None:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        print("shoal: serve stopped", file=sys.stderr)
    finally:
        server.server_close()
