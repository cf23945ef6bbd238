from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import complete
from shoal.errors import SpecError
from shoal.plan.build import CHANGED, DONE, FAILED, MISSING, parse_only
from shoal.spec.codehash import code_hash

FOUR_STEPS = """
exp = shoal.Experiment("sf", grid=shoal.Grid(site=["a", "b"], factor=[0, 1, 5], seed=range(2)))

@exp.step(per=["site"])
def prep(ctx, site):
    return {"n": 1}

@exp.step(per=["site", "factor", "seed"], needs=[prep])
def train(ctx, site, factor, seed):
    return {"rmse": 0.1}  # TRAIN_BODY

@exp.step(per=["site", "factor", "seed"], needs=[train])
def evaluate(ctx, site, factor, seed):
    return {"val": 1.0}

@exp.gather(per=["factor"], over=evaluate)
def by_factor(ctx, factor, runs):
    return {"n": len(runs)}

@exp.gather(per=[], over=evaluate)
def combine(ctx, runs):
    return {}
"""


def test_counts_and_projection_edges(write_exp, load) -> None:
    exp = load(write_exp(FOUR_STEPS))
    plan = exp.plan()
    sizes = {n: len(sp) for n, sp in plan.steps.items()}
    assert sizes == {"prep": 2, "train": 12, "evaluate": 12, "by_factor": 3, "combine": 1}
    train, prep = plan.steps["train"], plan.steps["prep"]
    for i, p in enumerate(train.params):
        ups = train.upstream(i)
        assert len(ups) == 1 and ups[0][0] is prep
        assert prep.params[ups[0][1]] == (p[0],)
    byf = plan.steps["by_factor"]
    ev = plan.steps["evaluate"]
    for i, (factor,) in enumerate(byf.params):
        ups = [ev.params[j] for _, j in byf.upstream(i)]
        assert len(ups) == 4 and all(u[1] == factor for u in ups)
    assert len(plan.steps["combine"].upstream(0)) == 12
    assert train.keys[0] == "site=a/factor=0/seed=0"
    assert plan.summary()["run"] == 30


def test_gather_select_takes_a_slice(write_exp, load) -> None:
    exp = load(write_exp("""
        exp = shoal.Experiment("x", grid=shoal.Grid(seed=range(3), partition=["train", "val"]))
        @exp.step(per=["seed", "partition"])
        def evaluate(ctx, seed, partition): ...
        @exp.gather(per=[], over=evaluate, select={"partition": "val"})
        def combine(ctx, runs): ...
        @exp.gather(per=["partition"], over=evaluate, select={"seed": lambda s: s > 0})
        def late(ctx, partition, runs): ...
    """))
    plan = exp.plan()
    ev = plan.steps["evaluate"]
    ups = [ev.params[j] for _, j in plan.steps["combine"].upstream(0)]
    assert sorted(ups) == [(0, "val"), (1, "val"), (2, "val")]
    late = plan.steps["late"]
    assert all(ev.params[j][0] > 0 for i in range(len(late)) for _, j in late.upstream(i))


def test_fingerprint_ignores_comments_docstrings_and_decorators() -> None:
    def f(ctx, x):
        """Doc."""
        y = x + 1  # comment
        return y

    def g(ctx, x):
        # another comment

        y = x + 1
        return y

    def h(ctx, x):
        y = x + 2
        return y

    assert code_hash(f) == code_hash(g)
    assert code_hash(f) != code_hash(h)


def test_fresh_plan_is_all_missing_and_writes_nothing(write_exp, load, tmp_path: Path) -> None:
    exp = load(write_exp(FOUR_STEPS))
    plan = exp.plan()
    assert all(s == MISSING for sp in plan.steps.values() for s in sp.state)
    assert not (tmp_path / "runs").exists()


def test_done_after_complete_then_code_change_reruns_step_and_downstream(
    write_exp, load
) -> None:
    path = write_exp(FOUR_STEPS)
    exp = load(path)
    complete(exp)
    assert exp.plan().summary()["run"] == 0
    path.write_text(path.read_text().replace("0.1}  # TRAIN_BODY", "0.2}"))
    plan = load(path).plan()
    s = plan.summary()["steps"]
    assert s["prep"]["run"] == 0
    assert s["train"]["reasons"]["changed"] == 12
    assert s["evaluate"]["reasons"]["changed"] == 12
    assert s["by_factor"]["reasons"]["changed"] == 3
    assert s["combine"]["reasons"]["changed"] == 1
    tr = plan.steps["train"]
    assert tr.detail[0] == "code of 'train' changed"
    assert "upstream" in plan.steps["evaluate"].detail[0]


def test_comment_only_edit_changes_nothing(write_exp, load) -> None:
    path = write_exp(FOUR_STEPS)
    complete(load(path))
    path.write_text(path.read_text().replace("# TRAIN_BODY", "# a different comment"))
    assert load(path).plan().summary()["run"] == 0


def test_version_change_is_named(write_exp, load) -> None:
    body = FOUR_STEPS.replace("needs=[prep])", "needs=[prep], version=1)", 1)
    path = write_exp(body)
    complete(load(path))
    path.write_text(path.read_text().replace("version=1", "version=2"))
    plan = load(path).plan()
    assert plan.steps["train"].detail[0] == "version of 'train' changed (1 -> 2)"


def test_failed_and_missing_and_folder_deleted(write_exp, load) -> None:
    exp = load(write_exp(FOUR_STEPS))
    complete(exp, steps=["prep", "train"], failed=[("train", "site=a/factor=1/seed=0")])
    plan = exp.plan()
    tr = plan.steps["train"]
    assert tr.state.count(FAILED) == 1 and tr.state.count(DONE) == 11
    assert plan.steps["evaluate"].state.count(MISSING) == 12
    shutil.rmtree(exp.root / "train" / "site=b" / "factor=5" / "seed=1")
    plan = exp.plan()
    i = plan.steps["train"].keys.index("site=b/factor=5/seed=1")
    assert plan.steps["train"].state[i] == MISSING
    assert plan.steps["train"].detail[i] == "folder deleted"


def test_upstream_rerun_invalidates_downstream(write_exp, load) -> None:
    exp = load(write_exp(FOUR_STEPS))
    complete(exp)
    # prep of site a loses its folder: it reruns, and everything downstream of it with it
    shutil.rmtree(exp.root / "prep" / "site=a")
    plan = exp.plan()
    s = plan.summary()["steps"]
    assert s["prep"]["reasons"]["missing"] == 1
    assert s["train"]["reasons"]["changed"] == 6
    assert s["combine"]["reasons"]["changed"] == 1
    # once prep has re-run on its own (new results), the downstream is still out of date
    complete(exp, steps=["prep"])
    plan = exp.plan()
    assert plan.summary()["steps"]["train"]["reasons"]["changed"] == 6
    assert plan.steps["train"].detail[0] == "upstream results changed since it ran"


def test_only_restricts_and_drops_gathers_over_excluded(write_exp, load) -> None:
    exp = load(write_exp(FOUR_STEPS))
    plan = exp.plan(only=parse_only(exp, ["site=a"]))
    s = plan.summary()["steps"]
    assert (s["prep"]["total"], s["train"]["total"], s["by_factor"]["total"]) == (1, 6, 0)
    assert s["combine"]["total"] == 0
    plan = exp.plan(only=parse_only(exp, ["factor=1"]))
    s = plan.summary()["steps"]
    assert (s["prep"]["total"], s["train"]["total"], s["by_factor"]["total"]) == (2, 4, 1)
    with pytest.raises(SpecError, match="not a value"):
        parse_only(exp, ["factor=7"])
    with pytest.raises(SpecError, match="grid dimension"):
        parse_only(exp, ["fctor=1"])


def test_changed_takes_precedence_over_folder_and_state_codes(write_exp, load) -> None:
    exp = load(write_exp(FOUR_STEPS))
    complete(exp)
    plan = exp.plan()
    assert {s for sp in plan.steps.values() for s in sp.state} == {DONE}
    assert CHANGED not in plan.steps["combine"].state


def test_hash_code_tracks_files_and_functions(tmp_path: Path) -> None:
    import shoal

    (tmp_path / "script.py").write_text("print(1)\n")

    def helper(x):
        return x + 1  # a comment

    a = shoal.hash_code("script.py", helper, base=str(tmp_path))
    assert a == shoal.hash_code("script.py", helper, base=str(tmp_path))
    (tmp_path / "script.py").write_text("print(2)\n")
    assert a != shoal.hash_code("script.py", helper, base=str(tmp_path))
    with pytest.raises(SpecError, match="cannot read"):
        shoal.hash_code("missing.py", base=str(tmp_path))
