"""The Slurm backend against a Slurm double (tests/fakeslurm.py): submission, following,
out-of-memory retries, preemption and adoption, in seconds and without a cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fakeslurm import FakeSlurm
from shoal.backends.slurm import SlurmOptions, manifest
from shoal.spec.loader import load_experiment

BODY = """
exp = shoal.Experiment("fake", grid=shoal.Grid(i=range(4)))

@exp.step(per=["i"], mem="1G", retries=1)
def t(ctx, i):
    return {"i": i, "attempt": ctx.attempt}

@exp.gather(over=t)
def total(ctx, runs):
    return {"n": len(runs)}
"""


def _run(path: Path, **options):
    exp = load_experiment(str(path), {})
    opts = SlurmOptions(poll_s=0.01, max_poll_s=0.05, tasks_per_job=1, **options)
    return exp.run(backend="slurm", slurm=opts, progress="none")


def _metrics(tmp_path: Path, rel: str) -> dict:
    return json.loads((tmp_path / "runs" / rel / ".shoal-result.json").read_text())["metrics"]


def test_a_plan_runs_through_the_double_and_each_array_is_listed_once_submitted(
        monkeypatch, write_exp, tmp_path: Path) -> None:
    fake = FakeSlurm().install(monkeypatch)
    report = _run(write_exp(BODY))
    assert report.done == 5 and report.ok
    assert fake.sbatch_calls == 2  # one array per step
    assert _metrics(tmp_path, "total") == {"n": 4}
    listed = manifest.load(tmp_path / "runs")
    assert listed is not None and len(listed["elements"]) == 5
    assert "#SBATCH --mem=1024M" in fake.scripts["100"]


def test_an_element_out_of_memory_is_retried_with_more_memory(monkeypatch, write_exp,
                                                               tmp_path: Path) -> None:
    def oom_once(fake: FakeSlurm, job: str, index: int, text: str) -> str | None:
        first = job == "100" and index == 2
        return "OUT_OF_MEMORY" if first else None

    fake = FakeSlurm(decide=oom_once).install(monkeypatch)
    report = _run(write_exp(BODY), mem_retry_factor=2.0)
    assert report.done == 5, report.failures
    retry = [text for text in fake.scripts.values() if "--mem=2048M" in text]
    assert len(retry) == 1  # the task that ran out of memory, with twice the memory
    assert _metrics(tmp_path, "t/i=2")["attempt"] == 2


def test_a_preempted_element_goes_out_again_without_using_a_retry(monkeypatch, write_exp,
                                                                  tmp_path: Path) -> None:
    def preempt_once(fake: FakeSlurm, job: str, index: int, text: str) -> str | None:
        return "PREEMPTED" if job == "100" and index == 1 else None

    FakeSlurm(decide=preempt_once).install(monkeypatch)
    report = _run(write_exp(BODY.replace("retries=1", "retries=0")))
    assert report.done == 5 and report.ok, report.failures


def _killed_after_submitting(monkeypatch, path: Path):
    """A run that submitted the array of step t (its elements held queued) and died."""
    from shoal.backends.slurm import SlurmBackend
    from shoal.plan.build import build_plan
    from shoal.schedule.dispatch import SpecBuilder
    from shoal.state.store import Store

    fake = FakeSlurm(decide=lambda fake, job, index, text: "PENDING").install(monkeypatch)
    exp = load_experiment(str(path), {})
    opts = SlurmOptions(poll_s=0.01, max_poll_s=0.05, tasks_per_job=1)
    with Store.open(exp.root, create=True) as store:
        plan = build_plan(exp, exp.root, store=store)
        builder = SpecBuilder(plan, store, False, lambda: None, node_stage=True)
        be = SlurmBackend(root=exp.root, experiment=exp.name, options=opts)
        be.pending = [[builder.build(plan.steps["t"], i, 1, 1, [])] for i in range(4)]
        be._submit()
    return fake, exp, opts


def test_elements_of_a_killed_run_are_adopted_not_submitted_again(monkeypatch, write_exp,
                                                                  tmp_path: Path) -> None:
    """The manifest a killed controller left names queued elements: the next run follows
    them and submits only what no element holds."""
    held, exp, opts = _killed_after_submitting(monkeypatch, write_exp(BODY))
    assert held.sbatch_calls == 1 and len(manifest.load(exp.root)["elements"]) == 4

    def run_held(fake: FakeSlurm, job: str, index: int, text: str) -> str | None:
        return None

    held.decide = run_held
    original = held._squeue
    seen = []

    def squeue_then_run(args: list[str]) -> str:  # queued at the run's start; then they end
        seen.append(args)
        if len(seen) > 1:
            held.run_pending()
        return original(args)

    monkeypatch.setattr(held, "_squeue", squeue_then_run)
    report = exp.run(backend="slurm", slurm=opts, progress="none")
    assert report.done == 5, report.failures
    assert held.sbatch_calls == 2, [c[:3] for c in held.calls]  # the gather only
    for i in range(4):
        assert _metrics(tmp_path, f"t/i={i}")["attempt"] == 1


@pytest.mark.parametrize("bad", ["FAILED", "NODE_FAIL"])
def test_an_element_that_ends_without_a_result_fails_its_task_with_the_state(
        monkeypatch, write_exp, tmp_path: Path, bad: str) -> None:
    FakeSlurm(decide=lambda fake, job, index, text: bad if index == 0 else None).install(
        monkeypatch)
    report = _run(write_exp(BODY.replace("retries=1", "retries=0")))
    assert report.failed == 1 and report.skipped == 1  # the task, and the gather
    label, error = report.failures[0]
    assert label == "t[i=0]" and re.search(bad, error), error


def test_elements_that_ended_before_the_run_looked_are_not_submitted_again(
        monkeypatch, write_exp, tmp_path: Path) -> None:
    """The plan was made before the first squeue: an element that ended in between had
    left its result file, yet its task was planned to run, and ran a second time."""
    fake, exp, opts = _killed_after_submitting(monkeypatch, write_exp(BODY))
    fake.decide = None
    original = fake._squeue

    def end_now(args: list[str]) -> str:  # they end right when the run first asks
        fake.run_pending()
        return original(args)

    monkeypatch.setattr(fake, "_squeue", end_now)
    report = exp.run(backend="slurm", slurm=opts, progress="none")
    assert report.ok and fake.sbatch_calls == 2  # the gather only
    for i in range(4):
        assert _metrics(tmp_path, f"t/i={i}")["attempt"] == 1


FLAKY_PACKED = """
exp = shoal.Experiment("fake", grid=shoal.Grid(site=["a", "b"], seed=range(3)))

@exp.step(per=["site", "seed"], pack=["seed"], retries=1)
def fit(pack, site, seed):
    return [{"attempt": m.attempt} for m in pack.members]

@exp.step(per=["site"], needs=[], retries=1)
def flaky(ctx, site):
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": ctx.attempt}

@exp.gather(over=fit)
def total(ctx, runs):
    return {"n": len(runs)}
"""


def test_detach_is_the_controller_s_dispatch_in_one_pass(monkeypatch, write_exp,
                                                         tmp_path: Path) -> None:
    """--detach groups packs as an attached run does (one element per site), puts each
    step's arrays after those of the steps it needs, and the element retries a failed task
    by the controller's rule (spec.retries), numbering the attempts on."""
    fake = FakeSlurm().install(monkeypatch)
    exp = load_experiment(str(write_exp(FLAKY_PACKED)), {})
    opts = SlurmOptions(poll_s=0.01, max_poll_s=0.05)
    report = exp.run(backend="slurm", slurm=opts, detach=True, progress="none")
    assert report.tasks == {"fit": 6, "flaky": 2, "total": 1}, report
    fit_jobs, total_jobs = report.arrays["fit"], report.arrays["total"]
    assert re.search(r"^#SBATCH --array=0-1$", fake.scripts[fit_jobs[0]], re.M)  # 2 packs
    assert f"--dependency=afterany:{fit_jobs[0]}" in fake.scripts[total_jobs[0]]
    assert "--dependency" not in fake.scripts[report.arrays["flaky"][0]]
    assert _metrics(tmp_path, "flaky/site=b") == {"attempt": 2}
    assert _metrics(tmp_path, "total") == {"n": 6}


def test_detach_submits_no_task_whose_input_is_missing(monkeypatch, write_exp,
                                                       tmp_path: Path) -> None:
    """Bug: --detach submitted every task not done, blocked ones too (their missing input
    files then failed them on the cluster). Now it submits what an attached run would."""
    (tmp_path / "data").mkdir()
    for i in (0, 1, 3):
        (tmp_path / "data" / f"{i}.txt").write_text(str(i))
    fake = FakeSlurm().install(monkeypatch)
    exp = load_experiment(str(write_exp('''
exp = shoal.Experiment("fake", grid=shoal.Grid(i=range(4)))

@exp.step(per=["i"], inputs="data/{i}.txt")
def t(ctx, i):
    return {"i": i}

@exp.step(per=["i"], needs=[t])
def u(ctx, i):
    return {"i": i}
''')), {})
    report = exp.run(backend="slurm", slurm=SlurmOptions(poll_s=0.01), detach=True,
                     progress="none", missing_inputs="skip")
    assert report.tasks == {"t": 3, "u": 3}, report
    assert fake.sbatch_calls == 2
