"""The Slurm backend: batch-script text and chunking (everywhere), and real runs on a real
Slurm (scripts/local-slurm.sh) where ``sbatch`` exists. With ``SHOAL_REQUIRE_SLURM=1`` (CI)
a missing Slurm fails these tests instead of skipping them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import kill9_when
from shoal.backends.slurm import script
from shoal.backends.slurm.profile import StepOptions
from test_run import shoal_cmd

GOLDEN = Path(__file__).with_name("golden")


def test_batch_script_matches_golden() -> None:
    text = script.render(
        job_name="shoal-streamflow-train", size=1001,
        output="/runs/logs/train/%A_%a.out", python="/venv/bin/python",
        submission="/runs/.shoal/slurm/1-2-3", offset=2002, cpus=4, mem_mb=2048,
        time_s=1200, gpus=0.5, options=StepOptions(
            throttle=50, partition="ckpt", account="lab", qos="normal",
            extra=["--constraint=v100", "--requeue"]),
    )
    assert text == (GOLDEN / "train.sbatch").read_text()


def test_minimal_script_has_no_optional_lines() -> None:
    text = script.render(job_name="j", size=3, output="o/%A_%a.out",
                         python="python3", submission="/s with space", offset=0, cpus=1)
    assert "--array=0-2\n" in text and "--mem" not in text and "--time" not in text
    assert "--gres" not in text and "'/s with space' 0" in text


def test_chunks_fit_max_array_size_at_27270_tasks() -> None:
    parts = script.chunks(27270, 1001)
    assert len(parts) == 28
    assert all(size <= 1001 for _, size in parts)
    assert parts[0] == (0, 1001) and parts[-1] == (27027, 243)
    assert sum(size for _, size in parts) == 27270
    assert [o for o, _ in parts] == list(range(0, 27270, 1001))


def _need_slurm() -> None:
    if shutil.which("sbatch") is None:
        if os.environ.get("SHOAL_REQUIRE_SLURM"):
            pytest.fail("Slurm is required here (SHOAL_REQUIRE_SLURM) but sbatch is missing")
        pytest.skip("no Slurm here (sbatch not on PATH; scripts/local-slurm.sh starts one)")
    res = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        if os.environ.get("SHOAL_REQUIRE_SLURM"):
            pytest.fail(f"Slurm is required here but does not answer: {res.stderr}")
        pytest.skip("Slurm does not answer (sinfo)")


def slurm_run(path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*shoal_cmd(), "run", str(path), "--backend", "slurm",
                           "--progress", "plain", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_slurm_arrays_with_bundles_and_a_retried_failure(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    path = write_exp(f"""
        import os, pathlib
        exp = shoal.Experiment("sl", grid=shoal.Grid(i=range(200)))
        @exp.step(per=["i"], retries=1)
        def work(ctx, i):
            marker = pathlib.Path({str(tmp_path)!r}) / f"tried-{{i}}"
            if i == 7 and not marker.exists():
                marker.write_text("1")
                raise RuntimeError("first attempt fails")
            return {{"i": i, "job": os.environ.get("SLURM_ARRAY_JOB_ID"),
                     "attempt": ctx.attempt}}
        @exp.gather(per=[], over=work)
        def total(ctx, runs):
            return {{"n": len(runs), "sum": int(runs.i.sum())}}
    """)
    res = slurm_run(path, "--tasks-per-job", "20")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "201 done" in res.stderr or "202 done" in res.stderr
    results = (tmp_path / "runs/work").glob("*/.shoal-result.json")
    docs = [json.loads(p.read_text()) for p in results]
    assert len(docs) == 200 and all(d["metrics"]["job"] for d in docs)
    retried = next(d for d in docs if d["params"]["i"] == 7)
    assert retried["metrics"]["attempt"] == 2
    jobs = {d["metrics"]["job"] for d in docs}
    assert len(jobs) <= 3  # one array for the 200 tasks (+ one for the retry)
    total = json.loads((tmp_path / "runs/total/.shoal-result.json").read_text())
    assert total["metrics"] == {"n": 200, "sum": sum(range(200))}
    logs = list((tmp_path / "runs/logs/work").glob("*_*.out"))
    assert 10 <= len(logs) <= 12  # 200 tasks / 20 per element (+ the retry)
    res = slurm_run(path)
    assert "nothing to run" in res.stderr


def test_slurm_ignores_the_error_file_of_an_earlier_run(write_exp, tmp_path: Path) -> None:
    """Review regression: after a fix, the old .shoal-error.json (same attempt number, other
    fingerprint) must not be taken as the new attempt's outcome."""
    _need_slurm()
    body = """
        exp = shoal.Experiment("fix", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"])
        def t(ctx, i):
            raise RuntimeError("broken")
    """
    path = write_exp(body)
    assert slurm_run(path).returncode == 1
    path.write_text(path.read_text().replace('raise RuntimeError("broken")', "return {}"))
    res = slurm_run(path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "runs/t/i=0/.shoal-result.json").exists()


def test_cancel_cancels_only_this_runs_jobs(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    import time

    other = subprocess.run(["sbatch", "--parsable", "--hold", "--output=/dev/null",
                            "--wrap", "true"], capture_output=True, text=True, check=True)
    other_id = other.stdout.strip().split(";")[0]
    path = write_exp("""
        exp = shoal.Experiment("cx", grid=shoal.Grid(i=range(5)))
        @exp.step(per=["i"])
        def t(ctx, i):
            return {}
    """)
    proc = subprocess.Popen([*shoal_cmd(), "run", str(path), "--backend", "slurm",
                             "--progress", "none", "--sbatch=--hold"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        jobs = tmp_path / "runs/.shoal/slurm/jobs"
        deadline = time.time() + 60
        while not jobs.exists():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        res = subprocess.run([*shoal_cmd(), "cancel", str(path)], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0 and "cancelled 1 array" in res.stderr, res.stderr
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "CANCELLED" in err, err
        left = subprocess.run(["squeue", "-h", "-j", other_id, "-o", "%T"],
                              capture_output=True, text=True)
        assert left.stdout.strip() == "PENDING"  # somebody else's job is untouched
    finally:
        proc.kill()
        subprocess.run(["scancel", other_id], check=False)


def test_a_task_over_its_time_limit_is_reported_as_timeout(write_exp, tmp_path: Path) -> None:
    """Slurm checks limits about every 30 s: this takes 1–2 minutes."""
    _need_slurm()
    path = write_exp("""
        import time
        exp = shoal.Experiment("tl", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"])
        def t(ctx, i):
            time.sleep(600)
            return {}
    """)
    res = slurm_run(path, "--sbatch=--time=00:01:00", timeout=400)
    assert res.returncode == 1
    assert "hit its time limit (TIMEOUT)" in res.stderr, res.stderr[-2000:]


def test_out_of_memory_is_retried_with_more_memory(write_exp, tmp_path: Path) -> None:
    _need_slurm()
    cg = Path("/sys/fs/cgroup/memory")
    if not cg.is_dir():
        pytest.skip("no cgroup-v1 memory controller: Slurm cannot enforce --mem here")
    path = write_exp("""
        exp = shoal.Experiment("oom", grid=shoal.Grid(i=[0]))
        @exp.step(per=["i"], mem="150M", retries=1)
        def t(ctx, i):
            blocks = [bytearray(20 * 1024 * 1024) for _ in range(12)]  # ~240 MB
            return {"mb": 20 * len(blocks)}
    """)
    res = slurm_run(path, "--mem-retry-factor", "3", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((tmp_path / "runs/t/i=0/.shoal-result.json").read_text())
    assert doc["attempt"] == 2
    scripts = list((tmp_path / "runs/.shoal/slurm").glob("*/array-0.sh"))
    mems = sorted(s.read_text().split("--mem=")[1].split("M")[0] for s in scripts)
    assert mems == ["150", "450"]


def test_slurm_tasks_see_inputs_own_outputs_and_run_their_setup_lines(write_exp,
                                                                       tmp_path: Path) -> None:
    """inputs=, outputs=, vars=, env=, setup= and metrics= on Slurm array elements."""
    _need_slurm()
    (tmp_path / "env.sh").write_text("export FROM_SETUP=yes\n")
    (tmp_path / "data").mkdir()
    for k in range(2):
        (tmp_path / f"data/in_{k}.txt").write_text(f"input {k}\n")
    path = write_exp(r"""
        import os
        exp = shoal.Experiment("sl_files", grid=shoal.Grid(k=[0, 1]), vars={"tag": "t"})

        @exp.step(per=["k"], inputs={"data": "data/in_{k}.txt"}, outputs=["shared/{k}.txt"],
                  setup="source env.sh", env={"MY": "my {k}"})
        def f(ctx, k):
            ctx.outputs[0].write_text(ctx.inputs["data"].read_text())
            return {"setup": os.environ.get("FROM_SETUP"), "my": os.environ["MY"],
                    "tag": ctx.vars["tag"]}

        exp.command("c", "cat {data}; echo 'score={tag}{k} 0.25' && echo score: 0.25", per=["k"],
                    inputs={"data": "data/in_{k}.txt"}, setup="source env.sh",
                    metrics={"score": r"score: (\S+)"})
    """)
    res = slurm_run(path)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "runs/f/k=1/.shoal-result.json").read_text())
    assert doc["metrics"] == {"setup": "yes", "my": "my 1", "tag": "t"}
    assert (tmp_path / "shared/1.txt").read_text() == "input 1\n"
    assert json.loads((tmp_path / "runs/c/k=0/.shoal-result.json").read_text())[
        "metrics"] == {"score": 0.25}
    (tmp_path / "data/in_1.txt").write_text("input 1, edited\n")
    res = slurm_run(path)
    assert res.returncode == 0 and "2 done" in res.stderr, res.stderr[-3000:]
    assert (tmp_path / "shared/1.txt").read_text() == "input 1, edited\n"


def test_a_killed_attached_run_s_arrays_are_adopted_not_submitted_again(write_exp,
                                                                         tmp_path: Path) -> None:
    """kill -9 of an attached `shoal run --backend slurm` left its arrays running, and the
    next run submitted every unfinished task again: each ran twice, at once, in one folder."""

    _need_slurm()
    path = write_exp("""
        import os, time
        exp = shoal.Experiment("adopt", grid=shoal.Grid(i=range(6)))

        @exp.step(per=["i"])
        def t(ctx, i):
            with open(ctx.out.parent / f"ran_{i}", "a") as fh:
                fh.write(os.environ.get("SLURM_JOB_ID", "?") + "\\n")
            time.sleep(4)
            return {"i": i}
    """)
    kill9_when(["run", str(path), "--backend", "slurm", "--tasks-per-job", "1",
                "--progress", "none"], lambda: bool(list((tmp_path / "runs/t").glob("ran_*"))),
               timeout=120)
    res = slurm_run(path, "--tasks-per-job", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    for i in range(6):
        runs = (tmp_path / f"runs/t/ran_{i}").read_text().split()
        assert len(runs) == 1, (i, runs)  # adopted: each task ran once
    assert "nothing to run" in slurm_run(path).stderr
