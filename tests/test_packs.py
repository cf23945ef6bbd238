"""Packs: members that differ only in the packed dimensions go to one call; each keeps its
own folder, result, log and status."""

from __future__ import annotations

import json
from pathlib import Path

PACKED = """
    import json, os
    LEDGER = {ledger!r}
    FAIL = shoal.config("fail", -1)
    exp = shoal.Experiment("pk", grid=shoal.Grid(site=["a", "b"], factor=[1, 2],
                                                 seed=range({seeds})))
    @exp.step(per=["site", "factor", "seed"], pack={pack!r}, pack_size={size})
    def train(pack, site, factor, seed):
        with open(LEDGER, "a") as fh:
            fh.write(json.dumps({{"pid": os.getpid(), "site": site, "factor": factor,
                                 "seed": seed, "n": len(pack)}}) + "\\n")
        print("pack of", len(pack), "for", site)
        out = []
        for m in pack.members:
            (m.out / "w.txt").write_text(str(m.params["seed"]))
            if m.params["seed"] == FAIL:
                out.append(ValueError(f"diverged at seed {{FAIL}}"))
            else:
                out.append({{"loss": m.params["factor"] * 10 + m.params["seed"]}})
        return out
    @exp.step(per=["site", "factor", "seed"], needs=[train])
    def evaluate(ctx, site, factor, seed):
        return {{"twice": 2 * ctx.input(train).result["loss"]}}
"""


def ledger(tmp_path: Path) -> list[dict]:
    path = tmp_path / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write(write_exp, tmp_path: Path, pack: list[str], size: int | None, seeds: int = 3) -> Path:
    return write_exp(PACKED.format(ledger=str(tmp_path / "ledger.jsonl"), pack=pack,
                                   size=size, seeds=seeds))


def test_a_pack_over_seeds_is_one_call_with_per_member_results(write_exp, cli,
                                                               tmp_path: Path) -> None:
    path = write(write_exp, tmp_path, ["seed"], 30)
    rc, _, err = cli("run", path, "-j", "2", "--progress", "none")
    assert rc == 0, err
    calls = ledger(tmp_path)
    assert len(calls) == 4  # (site, factor) groups, 3 seeds each
    assert all(c["n"] == 3 and c["seed"] == [0, 1, 2] for c in calls)
    assert {(c["site"], c["factor"]) for c in calls} == {(s, f) for s in "ab" for f in (1, 2)}
    for s in "ab":
        for f in (1, 2):
            for seed in range(3):
                folder = tmp_path / f"runs/train/site={s}/factor={f}/seed={seed}"
                doc = json.loads((folder / ".shoal-result.json").read_text())
                assert doc["metrics"] == {"loss": f * 10 + seed}
                assert (folder / "w.txt").read_text() == str(seed)
                assert f"pack of 3 for {s}" in (folder / ".shoal.log").read_text()
                ev = tmp_path / f"runs/evaluate/site={s}/factor={f}/seed={seed}"
                assert json.loads((ev / ".shoal-result.json").read_text())["metrics"] == {
                    "twice": 2 * (f * 10 + seed)}
    rc, _, err = cli("run", path, "--progress", "none")
    assert "nothing to run" in err and len(ledger(tmp_path)) == 4


def test_pack_size_and_packing_over_two_dimensions(write_exp, cli, tmp_path: Path) -> None:
    path = write(write_exp, tmp_path, ["factor", "seed"], 4, seeds=3)
    rc, _, err = cli("run", path, "-j", "1", "--progress", "none")
    assert rc == 0, err
    calls = ledger(tmp_path)
    assert sorted(c["n"] for c in calls) == [2, 2, 4, 4]  # 6 members per site: 4 + 2
    for c in calls:
        assert len(c["factor"]) == len(c["seed"]) == c["n"]
        assert isinstance(c["site"], str)


def test_a_member_result_that_is_an_exception_fails_that_member_only(write_exp, cli,
                                                                    tmp_path: Path) -> None:
    path = write(write_exp, tmp_path, ["seed"], None)
    rc, _, err = cli("run", path, "--config", "fail=1", "--progress", "none")
    assert rc == 1
    assert "4 failed" in err and "4 skipped" in err and "ValueError: diverged at seed 1" in err
    bad = tmp_path / "runs/train/site=a/factor=1/seed=1"
    assert json.loads((bad / ".shoal-error.json").read_text())["status"] == "failed"
    assert (tmp_path / "runs/train/site=a/factor=1/seed=2/.shoal-result.json").exists()
    # the next run packs only the members that are not done
    before = len(ledger(tmp_path))
    rc, _, err = cli("run", path, "--progress", "none")
    assert rc == 0, err
    again = ledger(tmp_path)[before:]
    assert len(again) == 4 and all(c["seed"] == [1] and c["n"] == 1 for c in again)


def test_an_exception_from_the_function_fails_the_whole_pack(write_exp, cli,
                                                             tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("pk", grid=shoal.Grid(seed=range(3)))
        @exp.step(per=["seed"], pack="seed")
        def train(pack, seed):
            raise RuntimeError("out of memory for " + str(len(pack)))
    """)
    rc, _, err = cli("run", path, "--progress", "none")
    assert rc == 1 and "3 failed" in err and "out of memory for 3" in err


def test_results_keyed_by_member_values(write_exp, cli, tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("pk", grid=shoal.Grid(lr=[0.1], seed=range(3)))
        @exp.step(per=["lr", "seed"], pack=["seed"])
        def train(pack, lr, seed):
            return {s: {"seed": s, "lr": lr} for s in seed}
    """)
    rc, _, err = cli("run", path, "--progress", "none")
    assert rc == 0, err
    doc = json.loads((tmp_path / "runs/train/lr=0.1/seed=2/.shoal-result.json").read_text())
    assert doc["metrics"] == {"seed": 2, "lr": 0.1}


def test_pack_on_a_command_step_is_refused(write_exp, cli) -> None:
    path = write_exp("""
        exp = shoal.Experiment("pk", grid=shoal.Grid(seed=range(3)))
        exp.command("c", "echo {seed}", per=["seed"], pack="seed")
    """)
    rc, _, err = cli("plan", path)
    assert rc == 2 and "unexpected keyword argument 'pack'" in err


def test_after_a_partial_run_only_the_missing_members_are_packed(write_exp, cli,
                                                                 tmp_path: Path) -> None:
    path = write(write_exp, tmp_path, ["seed"], 30)
    rc, _, err = cli("run", path, "--only", "seed=0", "site=a", "--progress", "none")
    assert rc == 0, err
    assert [(c["site"], c["seed"]) for c in ledger(tmp_path)] == [("a", [0]), ("a", [0])]
    rc, _, err = cli("run", path, "--progress", "none")
    assert rc == 0, err
    later = ledger(tmp_path)[2:]
    assert sorted((c["site"], c["factor"], c["seed"]) for c in later) == [
        ("a", 1, [1, 2]), ("a", 2, [1, 2]), ("b", 1, [0, 1, 2]), ("b", 2, [0, 1, 2])]
