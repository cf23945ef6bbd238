"""container= with a real runtime: Podman from Debian and a local busybox image
(``scripts/podman-setup.sh`` makes both; CI runs it and sets SHOAL_REQUIRE_PODMAN=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_run import run

IMAGE = "localhost/shoal-test:latest"


@pytest.fixture(scope="module")
def podman() -> str:
    exe = shutil.which("podman")
    ok = exe is not None and subprocess.run(
        [exe, "image", "exists", IMAGE], capture_output=True, timeout=60).returncode == 0
    if not ok:
        if os.environ.get("SHOAL_REQUIRE_PODMAN"):
            pytest.fail("podman or its test image is missing: bash scripts/podman-setup.sh")
        pytest.skip("podman and its test image are not here (bash scripts/podman-setup.sh)")
    assert exe is not None
    return exe


def _containers(podman: str) -> list[str]:
    res = subprocess.run([podman, "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                         text=True, timeout=60, check=True)
    return [n for n in res.stdout.split() if n.startswith("shoal-")]


EXPERIMENT = """
exp = shoal.Experiment("boxed", grid=shoal.Grid(test_set=[0, 1]),
                       container=shoal.Container("{image}", runtime="podman",
                                                 options=["--pull=never", "--network=none"]))

exp.command(
    "locate",
    "cat /etc/shoal-test-image > {{out}}/where.txt; cat {{sample}} > {{table}};"
    " echo $OMP_NUM_THREADS $SHOAL_TASK $MY_VAR > {{out}}/env.txt; echo 'loss: 0.5'",
    per=["test_set"], env={{"MY_VAR": "set {{test_set}}"}},
    inputs={{"sample": "data/sample_{{test_set}}.txt"}},
    outputs={{"table": "tables/table_{{test_set}}.txt"}},
    metrics={{"loss": r"loss: (\\S+)"}},
)
exp.command("fails", "exit 3", per=["test_set"])
exp.command("on_host", "test ! -e /etc/shoal-test-image", per=["test_set"], container=False)
"""


def test_a_command_runs_in_a_real_container_with_its_files_and_variables(
        podman: str, write_exp, tmp_path: Path) -> None:
    path = write_exp(EXPERIMENT.format(image=IMAGE))
    (tmp_path / "data").mkdir()
    for i in (0, 1):
        (tmp_path / f"data/sample_{i}.txt").write_text(f"sample {i}\n")
    res = run(path, "-j", "2")
    assert res.returncode == 1, res.stderr
    out = tmp_path / "runs/locate/test_set=1"
    assert (out / "where.txt").read_text() == "shoal-test\n"  # inside the image
    assert (out / "env.txt").read_text() == "1 test_set=1 set 1\n"
    assert (tmp_path / "tables/table_1.txt").read_text() == "sample 1\n"  # an owned output
    doc = json.loads((out / ".shoal-result.json").read_text())
    assert doc["metrics"] == {"loss": 0.5}
    assert "fails[test_set=0]: command exited with status 3" in res.stderr
    assert (tmp_path / "runs/on_host/test_set=0/.shoal-result.json").exists()
    assert not _containers(podman)  # --rm: none left


def test_a_killed_container_task_leaves_no_container(podman: str, write_exp,
                                                      tmp_path: Path) -> None:
    path = write_exp(f"""
        exp = shoal.Experiment("boxed", grid=shoal.Grid(k=[0]))
        exp.command("slow", "sleep 60", per=["k"], timeout=3,
                    container=shoal.Container("{IMAGE}", runtime="podman",
                                              options=["--pull=never", "--network=none"]))
    """)
    res = run(path)
    assert res.returncode == 1 and "timeout after 3 s" in res.stderr, res.stderr
    assert not _containers(podman)  # the runtime was killed; shoal removed its container
