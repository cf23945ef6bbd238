"""The state store: SQLite (WAL) under the run root, written only by the controller.

Tables: ``tasks`` (one row per task: its latest outcome, fingerprint, metrics), ``attempts``
(one row per attempt) and ``meta``. Workers never write here; they write result files that the
controller ingests. :func:`rescan` rebuilds the store from those files, so deleting the
database loses nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.state import resultfile
from shoal.state.status import STORED, TaskStatus, task_label

SCHEMA_VERSION = 1
STATE_DIR = ".shoal"
DB_NAME = "state.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS tasks (
    step TEXT NOT NULL,
    key TEXT NOT NULL,
    dec TEXT NOT NULL,
    status TEXT NOT NULL,
    fp TEXT,
    code TEXT,
    inputs TEXT,
    run_id TEXT,
    params TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    duration REAL,
    host TEXT,
    metrics TEXT,
    error TEXT,
    log_tail TEXT,
    updated REAL,
    files TEXT,
    outputs TEXT,
    PRIMARY KEY (step, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    step TEXT NOT NULL,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    fp TEXT,
    started REAL,
    ended REAL,
    host TEXT,
    error TEXT,
    backend_id TEXT,
    PRIMARY KEY (step, key, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS digests (
    path TEXT PRIMARY KEY,
    size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER,
    digest TEXT NOT NULL
) WITHOUT ROWID;
"""
#: Columns added since schema 1 (added to an older store when it is opened for writing).
_ADDED = (("tasks", "files", "TEXT"), ("tasks", "outputs", "TEXT"),
          ("tasks", "segment", "INTEGER"), ("tasks", "segments", "INTEGER"))
_TASK_COLUMNS = ("step, key, dec, status, fp, code, inputs, run_id, params, attempts, started, "
                 "ended, duration, host, metrics, error, log_tail, updated, files, outputs, "
                 "segment, segments")

#: Task statuses as stored (shoal.state.status; "lost" was declared here but never produced).
STATUSES = tuple(str(s) for s in STORED)


@dataclass(slots=True)
class TaskRecord:
    """One task's latest outcome, as stored and as read back from its result file."""

    step: str
    key: str
    status: str
    fp: str | None = None
    code: str | None = None
    inputs: str | None = None
    run_id: str | None = None
    params: dict[str, Any] | None = None
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    duration: float | None = None
    host: str | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    log_tail: str | None = None
    files: dict[str, str] | None = None  # input files it ran with: path -> digest
    # the paths outside its folder it owns -> [inode, mtime_ns] as it left them (done)
    outputs: dict[str, list[Any] | None] | None = None
    # a task longer than the cluster's longest job runs as chained jobs: the running one's
    # number (from 1) and how many (None: not chained)
    segment: int | None = None
    segments: int | None = None

    @property
    def decision(self) -> str:
        """``"status fp inputs run_id"``: what the planner compares, in one string."""
        return f"{self.status} {self.fp or '-'} {self.inputs or '-'} {self.run_id or '-'}"

    def row(self) -> tuple[Any, ...]:
        return (
            self.step, self.key, self.decision, self.status, self.fp, self.code, self.inputs,
            self.run_id,
            None if self.params is None else json.dumps(self.params),
            self.attempts, self.started, self.ended, self.duration, self.host,
            None if self.metrics is None else json.dumps(self.metrics) if self.metrics else "{}",
            self.error, self.log_tail, time.time(),
            None if self.files is None else json.dumps(self.files),
            None if self.outputs is None else json.dumps(self.outputs),
            self.segment, self.segments,
        )

    @property
    def label(self) -> str:
        return task_label(self.step, self.key)

    @classmethod
    def from_result(cls, data: dict[str, Any], status: str = TaskStatus.DONE) -> TaskRecord:
        """A record from a result (or error) file's JSON."""
        return cls(
            step=data["step"], key=data.get("key", ""), status=status,
            fp=data.get("fingerprint"), code=data.get("code"), inputs=data.get("inputs"),
            run_id=data.get("run_id"), params=data.get("params"),
            attempts=int(data.get("attempt", 1)), started=data.get("started"),
            ended=data.get("ended"), duration=data.get("duration"), host=data.get("host"),
            metrics=data.get("metrics") if status == TaskStatus.DONE else None,
            error=data.get("error"), log_tail=data.get("log_tail"),
            files=data.get("files"), outputs=data.get("outputs"),
        )


def db_path(root: Path) -> Path:
    """Where the store of a run root lives."""
    return root / STATE_DIR / DB_NAME


class Store:
    """The SQLite store of one run root."""

    def __init__(self, root: Path, conn: sqlite3.Connection | None,
                 read_only: bool = True) -> None:
        self.root = root
        self.conn = conn
        self.read_only = read_only

    @classmethod
    def open(cls, root: Path, *, create: bool = False, timeout: float = 30.0) -> Store:
        """Open the store; without ``create`` a missing store reads as empty (nothing written)."""
        path = db_path(root)
        if not path.exists():
            if not create:
                return cls(root, None)
            path.parent.mkdir(parents=True, exist_ok=True)
        if create:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            have = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
            for table, column, kind in _ADDED:
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        else:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        return cls(root, conn, read_only=not create)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.conn is None:
            return []
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def decision_rows(self, step: str) -> dict[str, str]:
        """``key -> "status fp inputs run_id"`` for every stored task of ``step``.

        One string per task (``-`` for a missing field) keeps loading 80,000 rows cheap; the
        planner compares it with the expected ``"done <fp> <inputs> "`` prefix.
        """
        return dict(self._query("SELECT key, dec FROM tasks WHERE step=?", (step,)))

    def statuses(self, step: str) -> dict[str, str]:
        """``key -> status`` as last recorded, for the stored tasks of ``step``."""
        return dict(self._query("SELECT key, status FROM tasks WHERE step=?", (step,)))

    def column(self, step: str, column: str) -> dict[str, Any]:
        """``key -> value`` of one column (``files``, ``outputs``: decoded JSON) for the
        stored tasks of ``step``; empty for a store older than that column."""
        assert column in ("files", "outputs")
        try:
            rows = self._query(f"SELECT key, {column} FROM tasks WHERE step=?", (step,))
        except sqlite3.OperationalError:  # (no such column: an older store, read-only)
            return {}
        return {k: json.loads(v) for k, v in rows if v}

    def digests(self) -> dict[str, tuple[int, int, int, int, str]]:
        """The cached digests of input files: path -> (size, mtime_ns, ctime_ns, ino,
        digest)."""
        return {r[0]: tuple(r[1:]) for r in self._query(  # type: ignore[misc]
            "SELECT path, size, mtime_ns, ctime_ns, ino, digest FROM digests")}

    def save_digests(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Remember digests of input files (path, size, mtime_ns, ctime_ns, ino, digest)."""
        conn = self._writable()
        with _transaction(conn):
            conn.executemany("INSERT OR REPLACE INTO digests VALUES (?,?,?,?,?,?)", list(rows))

    def codes(self, step: str) -> dict[str, str]:
        """``key -> code identity`` the stored tasks of ``step`` ran with."""
        return dict(self._query("SELECT key, code FROM tasks WHERE step=?", (step,)))

    def counts(self) -> dict[str, dict[str, int]]:
        """``step -> status -> count``."""
        out: dict[str, dict[str, int]] = {}
        for step, status, n in self._query(
            "SELECT step, status, count(*) FROM tasks GROUP BY step, status"
        ):
            out.setdefault(step, {})[status] = n
        return out

    def records(self, step: str | None = None, status: str | None = None) -> Iterator[TaskRecord]:
        """Stored task records, optionally of one step and/or status."""
        sql = (
            "SELECT step, key, status, fp, code, inputs, run_id, params, attempts, started, "
            "ended, duration, host, metrics, error, log_tail FROM tasks"
        )
        cond, args = [], []
        if step is not None:
            cond.append("step=?")
            args.append(step)
        if status is not None:
            cond.append("status=?")
            args.append(status)
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        for r in self._query(sql, tuple(args)):
            yield TaskRecord(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6],
                params=json.loads(r[7]) if r[7] else None, attempts=r[8],
                started=r[9], ended=r[10], duration=r[11], host=r[12],
                metrics=json.loads(r[13]) if r[13] else None, error=r[14], log_tail=r[15],
            )

    def chained(self) -> list[tuple[str, str, int, int]]:
        """``(step, key, segment, segments)`` of the running tasks that run as chained
        jobs (a store written before segments were recorded has none)."""
        try:
            return [(r[0], r[1], int(r[2]), int(r[3])) for r in self._query(
                "SELECT step, key, segment, segments FROM tasks WHERE status='running' "
                "AND segments > 1 ORDER BY step, key")]
        except sqlite3.OperationalError:  # (no such column: an older store, read-only)
            return []

    # ------------------------------------------------------------------ writing
    def _writable(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("store opened read-only")
        return self.conn

    def put(
        self, records: Iterable[TaskRecord], attempts: Iterable[tuple[Any, ...]] = ()
    ) -> int:
        """Insert or replace task records (and attempt rows) in one transaction."""
        conn = self._writable()
        rows = [r.row() for r in records]
        with _transaction(conn):
            conn.executemany(
                f"INSERT OR REPLACE INTO tasks ({_TASK_COLUMNS}) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )
            conn.executemany(
                "INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?)", list(attempts)
            )
        return len(rows)

    def add_attempt(
        self, step: str, key: str, attempt: int, status: str, *, fp: str | None = None,
        started: float | None = None, ended: float | None = None, host: str | None = None,
        error: str | None = None, backend_id: str | None = None,
    ) -> None:
        conn = self._writable()
        conn.execute(
            "INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?)",
            (step, key, attempt, status, fp, started, ended, host, error, backend_id),
        )

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT v FROM meta WHERE k=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._writable().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def clear(self) -> None:
        """Forget every task and attempt (the task folders are untouched)."""
        conn = self._writable()
        with _transaction(conn):
            conn.execute("DELETE FROM tasks")
            conn.execute("DELETE FROM attempts")


class _transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def scan_records(root: Path) -> Iterator[TaskRecord]:
    """Every task record the task folders under ``root`` hold (result or error files)."""
    if not root.is_dir():
        return
    for top in sorted(os.scandir(root), key=lambda e: e.name):
        if not top.is_dir() or top.name.startswith("."):
            continue
        for dirpath, dirnames, filenames in os.walk(top.path):
            dirnames[:] = [d for d in dirnames if "=" in d]
            names = set(filenames)
            if resultfile.RESULT in names:
                data = resultfile.read_json(Path(dirpath) / resultfile.RESULT)
                if data and "step" in data:
                    yield TaskRecord.from_result(data, TaskStatus.DONE)
                    continue
            if resultfile.ERROR in names:
                data = resultfile.read_json(Path(dirpath) / resultfile.ERROR)
                if data and "step" in data:
                    yield TaskRecord.from_result(data, data.get("status", TaskStatus.FAILED))


def rescan(root: Path) -> dict[str, int]:
    """Rebuild the store of ``root`` from the task folders; returns counts by status."""
    counts: dict[str, int] = {}
    records = list(scan_records(root))
    with Store.open(root, create=True) as store:
        store.clear()
        store.put(records)
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
