from __future__ import annotations

import json
from pathlib import Path

from shoal.state import resultfile
from shoal.state.store import Store, TaskRecord, db_path, rescan, scan_records


def test_missing_store_reads_empty_and_creates_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path / "runs") as s:
        assert s.decision_rows("x") == {}
        assert s.counts() == {}
    assert not (tmp_path / "runs").exists()


def test_put_and_read_back(tmp_path: Path) -> None:
    rec = TaskRecord("train", "seed=1", "done", fp="f", code="c", inputs="i", run_id="r",
                     params={"seed": 1}, attempts=2, metrics={"rmse": 0.5})
    with Store.open(tmp_path, create=True) as s:
        s.put([rec, TaskRecord("train", "seed=2", "failed", error="boom")])
        assert s.decision_rows("train") == {"seed=1": "done f i r", "seed=2": "failed - - -"}
        assert s.counts() == {"train": {"done": 1, "failed": 1}}
        back = list(s.records("train", status="done"))
    assert back[0].metrics == {"rmse": 0.5} and back[0].params == {"seed": 1}
    assert back[0].attempts == 2
    mode = Store.open(tmp_path).conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_rescan_reads_result_and_error_files_and_ignores_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    ok = resultfile.make_result(
        experiment="e", step="train", key="site=a/seed=0", params={"site": "a", "seed": 0},
        fingerprint="fp", code="c", inputs=None, attempt=1, started=1.0, ended=3.0,
        host="h", metrics={"m": 1},
    )
    meta = root / "train" / "site=a" / "seed=0"
    resultfile.write_json_atomic(meta / resultfile.RESULT, ok)
    bad = dict(ok, key="site=a/seed=1", status="failed", error="ValueError: x")
    resultfile.write_json_atomic(root / "train/site=a/seed=1" / resultfile.ERROR, bad)
    torn = root / "train/site=a/seed=2"
    torn.mkdir(parents=True)
    (torn / (resultfile.RESULT + ".1.ab.tmp")).write_text('{"step": "train", "ke')
    (torn / resultfile.RESULT).write_text('{"step": "tra')  # unreadable -> not done
    recs = {r.key: r for r in scan_records(root)}
    assert set(recs) == {"site=a/seed=0", "site=a/seed=1"}
    assert recs["site=a/seed=0"].status == "done" and recs["site=a/seed=0"].duration == 2.0
    assert recs["site=a/seed=1"].status == "failed"
    assert rescan(root) == {"done": 1, "failed": 1}
    assert db_path(root).exists()


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    resultfile.write_json_atomic(tmp_path / "a" / "r.json", {"x": 1})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 1}
    resultfile.write_json_atomic(tmp_path / "a" / "r.json", {"x": 2}, fsync=True)
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 2}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]


def test_task_statuses_are_one_enum_that_reads_and_writes_as_text() -> None:
    import json as _json

    from shoal.state.status import STORED, TaskStatus
    from shoal.state.store import STATUSES, TaskRecord

    assert TaskStatus.DONE == "done" and f"{TaskStatus.FAILED}" == "failed"
    assert str(TaskStatus.SKIPPED) == "skipped"
    assert _json.dumps([TaskStatus.RUNNING]) == '["running"]'
    assert TaskStatus("interrupted") is TaskStatus.INTERRUPTED
    assert TaskStatus.UNSTARTED not in STORED and "lost" not in STATUSES
    assert "submitted" in STATUSES  # (produced by --detach: now declared)
    rec = TaskRecord("s", "k=1", TaskStatus.DONE, fp="f", inputs=None, run_id="r")
    assert rec.decision == "done f - r"  # what the planner compares, as plain text
