"""The execution core's small parts, in milliseconds: the one retry rule, outcomes as typed
data, chained segments stored as fields."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shoal.state.status import Move, Outcome, TaskStatus, next_move
from shoal.state.store import Store, TaskRecord, db_path

S = TaskStatus


@pytest.mark.parametrize("status, kw, move", [
    (S.DONE, {}, Move.DONE),
    (S.UNSTARTED, {}, Move.AGAIN),
    (S.FAILED, {"attempt": 1, "max_attempts": 2}, Move.RETRY),
    (S.FAILED, {"attempt": 2, "max_attempts": 2}, Move.FAIL),
    (S.SKIPPED, {"attempt": 1, "max_attempts": 1}, Move.FAIL),
    (S.FAILED, {"attempt": 1, "max_attempts": 3, "stopping": True}, Move.STOP),
    (S.INTERRUPTED, {"requeues": 1, "max_requeues": 10}, Move.REQUEUE),
    (S.INTERRUPTED, {"requeues": 11, "max_requeues": 10}, Move.FAIL),
    (S.INTERRUPTED, {"requeues": 1, "max_requeues": 10, "stopping": True}, Move.STOP),
    (S.INTERRUPTED, {"requeues": 1, "max_requeues": 10, "may_requeue": False}, Move.STOP),
])
def test_next_move_is_the_one_retry_rule(status, kw, move) -> None:
    args = {"attempt": 1, "max_attempts": 1, **kw}
    assert next_move(status, **args) is move


def test_an_outcome_is_typed_and_pickles() -> None:
    import pickle

    o = Outcome("train", "seed=1", 2, TaskStatus("failed"), error="boom")
    back = pickle.loads(pickle.dumps(o))
    assert back == o and back.status is TaskStatus.FAILED and back.may_requeue


def test_a_chained_task_s_segment_is_stored_as_fields(tmp_path: Path) -> None:
    with Store.open(tmp_path, create=True) as store:
        store.put([TaskRecord("train", "seed=1", TaskStatus.RUNNING, segment=2, segments=6),
                   TaskRecord("train", "seed=2", TaskStatus.RUNNING)])
    with Store.open(tmp_path) as store:
        assert store.chained() == [("train", "seed=1", 2, 6)]
        (rec,) = [r for r in store.records() if r.key == "seed=2"]
        assert rec.error is None  # (the segment was once text in the error column)


def test_a_store_from_before_segments_reads_no_chained_task(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tasks (step TEXT, key TEXT, status TEXT)")
    conn.commit()
    conn.close()
    with Store.open(tmp_path) as store:  # read-only: no column is added
        assert store.chained() == []
