"""stage=: archives unpacked once (lock + marker) and shared by tasks; shoal pack-data."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from shoal.worker import staging


def _data(tmp_path: Path) -> Path:
    src = tmp_path / "raw"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    return src


def test_pack_data_then_function_and_command_steps_read_the_staged_folder(
        write_exp, cli, tmp_path: Path) -> None:
    src = _data(tmp_path)
    rc, _, err = cli("pack-data", src, "-o", tmp_path / "data.tar")
    assert rc == 0 and "2 files" in err
    path = write_exp("""
        exp = shoal.Experiment("st", grid=shoal.Grid(i=range(4)), stage=["data.tar"])
        @exp.step(per=["i"])
        def read(ctx, i):
            d = ctx.staged("data")
            return {"a": (d / "a.txt").read_text().strip(),
                    "b": (d / "sub" / "b.txt").read_text().strip(), "dir": str(d)}
        copy = exp.command("copy", "cp {staged[data]}/sub/b.txt {out}/b.txt", per=["i"])
    """)
    rc, _, err = cli("run", path, "-j", "2", "--progress", "none")
    assert rc == 0, err
    docs = [json.loads((tmp_path / f"runs/read/i={i}/.shoal-result.json").read_text())
            for i in range(4)]
    assert {d["metrics"]["a"] for d in docs} == {"alpha"}
    assert {d["metrics"]["b"] for d in docs} == {"beta"}
    assert len({d["metrics"]["dir"] for d in docs}) == 1
    for i in range(4):
        assert (tmp_path / f"runs/copy/i={i}/b.txt").read_text() == "beta\n"
    staged = [p for p in (tmp_path / "runs/.shoal/stage").iterdir() if p.is_dir()]
    assert len(staged) == 1 and (staged[0] / staging.MARKER).exists()  # unpacked once


def test_a_missing_archive_is_one_clear_error_and_nothing_runs(write_exp, cli,
                                                               tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("st", grid=shoal.Grid(i=range(2)))
        @exp.step(per=["i"])
        def first(ctx, i):
            return {}
        @exp.step(per=["i"], needs=[first], stage="inputs.tar")
        def read(ctx, i):
            return {}
    """)
    rc, _, err = cli("run", path, "--progress", "none")
    assert rc == 2
    assert "step 'read'" in err and "inputs.tar" in err and "shoal pack-data" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs/first").exists() and not (tmp_path / "runs/read").exists()


def test_an_unknown_staged_name_fails_the_task_with_the_fix(write_exp, cli,
                                                            tmp_path: Path) -> None:
    staging.pack_data(_data(tmp_path), tmp_path / "data.tar")
    path = write_exp("""
        exp = shoal.Experiment("st", grid=shoal.Grid(i=[0]), stage=["data.tar"])
        @exp.step(per=["i"])
        def read(ctx, i):
            ctx.staged("dataset")
    """)
    rc, _, err = cli("run", path, "--progress", "none")
    assert rc == 1
    assert "ctx.staged('dataset')" in err and "staged: data" in err


def _unpack(args: tuple[str, str]) -> str:
    return str(staging.unpack(*args))


def test_concurrent_unpacks_extract_once(tmp_path: Path) -> None:
    archive = tmp_path / "data.tar.gz"
    staging.pack_data(_data(tmp_path), archive)
    base = tmp_path / "scratch"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        folders = pool.map(_unpack, [(str(archive), str(base))] * 8)
    assert len(set(folders)) == 1
    assert sorted(p.name for p in base.iterdir() if not p.name.endswith(".lock")) == [
        Path(folders[0]).name]
    assert (Path(folders[0]) / "sub" / "b.txt").read_text() == "beta\n"
    # a rebuilt archive is unpacked afresh, beside the old copy
    (tmp_path / "raw" / "a.txt").write_text("changed\n")
    import os
    import time
    staging.pack_data(tmp_path / "raw", archive)
    os.utime(archive, (time.time() + 5, time.time() + 5))
    again = staging.unpack(str(archive), base)
    assert str(again) != folders[0] and (again / "a.txt").read_text() == "changed\n"


def test_archive_names_and_scratch_base(monkeypatch, tmp_path: Path) -> None:
    assert staging.archive_name("/x/data.tar.gz") == "data"
    assert staging.archive_name("images.tgz") == "images"
    assert staging.env_name("my-data") == "SHOAL_STAGED_MY_DATA"
    monkeypatch.setenv("SLURM_TMPDIR", str(tmp_path))
    assert staging.scratch_base().parent == tmp_path
    monkeypatch.delenv("SLURM_TMPDIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    assert staging.scratch_base().parent == Path("/tmp")
