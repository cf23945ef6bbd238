"""Files outside the model: inputs= (contents in the fingerprint), outputs= (owned paths),
end to end through the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from shoal.errors import SpecError
from shoal.plan.build import build_plan
from shoal.spec.loader import load_experiment
from shoal.state.store import Store
from test_run import run

INPUTS = """
exp = shoal.Experiment("ins", grid=shoal.Grid(test_set=range(3)))

locate = exp.command(
    "locate", "cat {sample} > {out}/copy.txt && echo run >> {out}/../runs.log",
    per=["test_set"], inputs={"sample": "data/sample_data_{test_set}.txt"})

@exp.gather(over=locate)
def combine(ctx, runs):
    return {"n": len(runs)}

@exp.step(per=["test_set"], inputs=["data/sample_data_{test_set}.txt", "data/shared.txt"])
def read(ctx, test_set):
    assert len(ctx.inputs) == 2 and ctx.inputs[1].name == "shared.txt"
    return {"text": ctx.inputs[0].read_text().strip()}
"""


def _data(tmp_path: Path, n: int = 3) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    for i in range(n):
        (tmp_path / f"data/sample_data_{i}.txt").write_text(f"sample {i}\n")
    (tmp_path / "data/shared.txt").write_text("shared\n")


def _why(cli, path: Path, *args: str) -> str:
    rc, out, err = cli("plan", path, "--why", *args)
    assert rc == 0, err
    return out


def test_editing_one_input_reruns_exactly_its_task_and_downstream(cli, write_exp,
                                                                   tmp_path: Path) -> None:
    path = write_exp(INPUTS)
    _data(tmp_path)
    run(path, "-j", "2", check=True)
    assert (tmp_path / "runs/locate/test_set=2/copy.txt").read_text() == "sample 2\n"
    assert "3 to run" not in _why(cli, path) and "0 to run" in _why(cli, path)
    time.sleep(0.01)
    (tmp_path / "data/sample_data_2.txt").write_text("sample 2, edited\n")
    out = _why(cli, path)
    assert "3 to run" in out  # locate[2], read[2], combine
    assert "locate[test_set=2]  input changed: data/sample_data_2.txt" in out
    assert "read[test_set=2]  input changed: data/sample_data_2.txt" in out
    assert "combine  upstream locate[test_set=2] will run (changed)" in out
    res = run(path, "-j", "2", check=True)
    assert "3 done" in res.stderr
    assert (tmp_path / "runs/locate/test_set=2/copy.txt").read_text() == "sample 2, edited\n"
    # the shared input of every `read` task: all three rerun, and nothing else
    (tmp_path / "data/shared.txt").write_text("shared, edited\n")
    _rc, out, _ = cli("plan", path, "--json")
    doc = json.loads(out)
    assert doc["run"] == 3 and doc["steps"]["read"]["run"] == 3


def test_a_touched_but_unchanged_input_reruns_nothing_and_the_digest_is_cached(
        cli, write_exp, tmp_path: Path) -> None:
    path = write_exp(INPUTS)
    _data(tmp_path)
    time.sleep(2.1)  # (files changed within 2 s are hashed again each time: "racy" digests)
    run(path, check=True)
    exp = load_experiment(str(path), {})
    with Store.open(exp.root) as store:
        assert len(store.digests()) == 4
    plan = build_plan(exp, exp.root)
    assert plan.summary()["run"] == 0
    os.utime(tmp_path / "data/sample_data_1.txt")  # touched, same contents
    assert build_plan(exp, exp.root).summary()["run"] == 0


def test_a_missing_input_is_one_error_and_keep_going_runs_the_others(cli, write_exp,
                                                                      tmp_path: Path) -> None:
    path = write_exp(INPUTS)
    _data(tmp_path)
    (tmp_path / "data/sample_data_1.txt").unlink()
    rc, out, err = cli("plan", path)
    assert rc == 2
    assert "input 'sample' data/sample_data_1.txt does not exist (for locate[test_set=1])" in err
    assert "--keep-going" in err and "Traceback" not in err
    res = run(path)
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not (tmp_path / "runs/locate").exists()  # nothing ran
    rc, out, err = cli("plan", path, "--keep-going", "--why")
    assert rc == 0
    assert "4 to run, 3 blocked" in out  # combine needs the blocked locate task
    assert "blocked  locate[test_set=1]  input 'sample'" in out
    assert "blocked  combine  upstream locate[test_set=1] is blocked" in out
    res = run(path, "--keep-going")
    assert res.returncode == 1
    assert "3 task(s) not run: an input is missing" in res.stderr
    assert (tmp_path / "runs/locate/test_set=0/copy.txt").exists()
    assert not (tmp_path / "runs/combine/.shoal-result.json").exists()  # its upstream: blocked
    (tmp_path / "data/sample_data_1.txt").write_text("back\n")
    res = run(path, check=True)
    assert "3 done" in res.stderr  # the two blocked tasks and the gather


def test_globbed_inputs_and_their_placeholders(cli, write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("g", grid=shoal.Grid(k=[0]))
        exp.command("count", "cat {inputs} | wc -l > {out}/n.txt; echo {parts}",
                    per=["k"], inputs={"parts": "data/part_*.txt"})

        @exp.step(per=["k"], inputs={"parts": "data/part_*.txt"})
        def listed(ctx, k):
            return {"n": len(ctx.inputs["parts"]), "first": ctx.inputs["parts"][0].name}
    """)
    (tmp_path / "data").mkdir()
    for i in range(2):
        (tmp_path / f"data/part_{i}.txt").write_text(f"{i}\n")
    run(path, check=True)
    assert (tmp_path / "runs/count/k=0/n.txt").read_text().strip() == "2"
    res = json.loads((tmp_path / "runs/listed/k=0/.shoal-result.json").read_text())
    assert res["metrics"] == {"n": 2, "first": "part_0.txt"}
    (tmp_path / "data/part_2.txt").write_text("2\n")
    out = _why(cli, path)
    assert "input added: data/part_2.txt" in out


TRAKLIKE = """
V = shoal.config("v", 1)
exp = shoal.Experiment("own", grid=shoal.Grid(model_id=range(2)))

@exp.step(per=["model_id"], outputs=["shared/{model_id}"], version=V)
def featurize(ctx, model_id):
    folder = ctx.outputs[0]
    # a tool that reuses what it finds ("already finalized, skipping") would go stale here
    assert not folder.exists(), "stale output left in place"
    folder.mkdir()
    (folder / "features.txt").write_text(f"{model_id} {V}")

@exp.gather(over=featurize)
def score(ctx, runs):
    return {"total": sum(len((Path("shared") / str(m) / "features.txt").read_text())
                         for m in runs.model_id)}
"""


def test_a_deleted_output_reruns_its_task_and_stale_outputs_go_first(cli, write_exp,
                                                                      tmp_path: Path) -> None:
    path = write_exp("from pathlib import Path\n" + TRAKLIKE)
    run(path, check=True)
    import shutil

    shutil.rmtree(tmp_path / "shared/1")
    out = _why(cli, path)
    assert "featurize[model_id=1]  output missing: shared/1" in out
    assert "2 to run" in out  # and the gather
    res = run(path, check=True)
    assert "2 done" in res.stderr
    # a changed training: every owned folder is removed before its task runs again
    (tmp_path / "shared/0/stale.txt").write_text("old")
    res = run(path, "--config", "v=2", "--yes", check=True)  # (replaces v=1's results)
    assert "3 done" in res.stderr
    assert not (tmp_path / "shared/0/stale.txt").exists()
    assert (tmp_path / "shared/0/features.txt").read_text() == "0 2"


def test_a_task_that_does_not_write_its_output_fails(cli, write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("o", grid=shoal.Grid(k=[0]))
        exp.command("c", "true", per=["k"], outputs={"table": "out/table_{k}.csv"})
    """)
    res = run(path)
    assert res.returncode == 1
    assert "without writing its declared output" in res.stderr
    assert (tmp_path / "out").is_dir()  # the parent is made for the task


@pytest.mark.parametrize("outputs, message", [
    ('["shared/{model_id}", "shared/{model_id}"]', "names one path twice"),
    ('["shared"]', "claim the same path"),
    ('["shared/{model_id}", "shared/{model_id}/x"]', "names nested paths"),
    ('["shared/{model_id}", "shared/1/x_{model_id}"]', "claim nested paths"),
    ('["."]', "holds the experiment folder"),
    ('["runs/x{model_id}"]', "inside the run root"),
    ('["data/{model_id}"]', "reads"),
])
def test_overlapping_or_dangerous_output_claims_are_refused(cli, write_exp, tmp_path: Path,
                                                             outputs: str, message: str) -> None:
    path = write_exp(f"""
        exp = shoal.Experiment("o", grid=shoal.Grid(model_id=range(2)))
        exp.command("c", "true", per=["model_id"], outputs={outputs})
        exp.command("r", "true", per=["model_id"], inputs=["data/0/x.txt"])
    """)
    (tmp_path / "data/0").mkdir(parents=True)
    (tmp_path / "data/0/x.txt").write_text("x")
    rc, _, err = cli("plan", path)
    assert rc == 2 and message in err, err
    assert "Traceback" not in err


def test_input_and_output_templates_are_checked_at_plan_time(write_exp) -> None:
    for opts, message in [
        ('inputs=["data/{seed}.txt"]', "names unknown placeholder '{seed}'"),
        ('inputs={"k": "data/{k}.txt"}', "inputs= name 'k' is a grid dimension"),
        ('inputs={"1x": "d"}', "must be a simple name"),
        ('outputs=["out/*.txt"]', "is a glob"),
        ("inputs=3", "must be a path template"),
        ('vars={"k": 1}', "vars name 'k' is a grid dimension"),
        ('vars={"out": 1}', "vars name 'out' is a placeholder shoal fills"),
        ('env={"1BAD": "x"}', "not a valid environment variable name"),
        ('env={"X": "{nope}"}', "names unknown placeholder '{nope}'"),
    ]:
        path = write_exp(f"""
            exp = shoal.Experiment("t", grid=shoal.Grid(k=[1, 2]))
            exp.command("c", "true", per=["k"], {opts})
        """)
        with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("{", r"\{")):
            load_experiment(str(path), {}).validate()


def test_clean_lists_what_no_task_owns_and_removes_it_only_with_yes(cli, write_exp,
                                                                    tmp_path: Path) -> None:
    path = write_exp("""
        N = shoal.config("models", 3)
        exp = shoal.Experiment("c", grid=shoal.Grid(model_id=range(N)))

        @exp.step(per=["model_id"], outputs=["shared/{model_id}"])
        def featurize(ctx, model_id):
            ctx.outputs[0].write_text("x")
    """)
    run(path, "--config", "models=3", check=True)
    (tmp_path / "runs/old_step/k=1").mkdir(parents=True)
    run(path, "--config", "models=2", check=True)  # the grid shrank
    rc, out, err = cli("clean", path)
    assert rc == 0
    assert "would remove 2 task folder(s) and 1 output(s)" in err
    assert str(tmp_path / "runs/featurize/model_id=2") in out
    assert str(tmp_path / "runs/old_step") in out
    assert str(tmp_path / "shared/2") in out
    assert "shared/0" not in out and "model_id=1" not in out
    assert (tmp_path / "shared/2").exists()  # a dry run
    rc, out, err = cli("clean", path, "--yes")
    assert rc == 0 and "removed" in err
    assert not (tmp_path / "shared/2").exists()
    assert not (tmp_path / "runs/featurize/model_id=2").exists()
    assert (tmp_path / "shared/1").exists() and (tmp_path / "runs/featurize/model_id=1").exists()
    rc, out, err = cli("clean", path)
    assert "nothing to clean" in err
    res = run(path, "--config", "models=2")
    assert "nothing to run" in res.stderr


def test_an_output_remade_by_another_run_root_makes_the_task_out_of_date(
        cli, write_exp, tmp_path: Path) -> None:
    """Outputs live outside the run root: a second root of the same experiment folder
    removes and rewrites them. The first root must not take its task as done on them."""
    path = write_exp("from pathlib import Path\n" + TRAKLIKE)
    run(path, "--root", str(tmp_path / "a"), check=True)
    run(path, "--root", str(tmp_path / "b"), "--config", "v=2", check=True)
    rc, out, _ = cli("plan", path, "--root", str(tmp_path / "a"), "--why")
    assert rc == 0
    assert "featurize[model_id=0]  output changed since it ran: shared/0" in out
    assert "3 to run" in out
    run(path, "--root", str(tmp_path / "a"), check=True)
    assert (tmp_path / "shared/0/features.txt").read_text() == "0 1"
    rc, out, _ = cli("plan", path, "--root", str(tmp_path / "a"))
    assert "0 to run" in out


def test_read_only_views_show_blocked_tasks_instead_of_failing(cli, write_exp,
                                                               tmp_path: Path) -> None:
    path = write_exp(INPUTS)
    _data(tmp_path)
    run(path, check=True)
    (tmp_path / "data/sample_data_0.txt").unlink()  # raw data removed after the run
    rc, out, err = cli("status", path)
    assert rc == 0, err
    rc, out, err = cli("results", path, "--step", "locate", "--format", "json")
    assert rc == 0, err
    rows = {r["test_set"]: r["status"] for r in json.loads(out)}
    assert rows == {0: "blocked", 1: "done", 2: "done"}


def test_a_folder_input_sees_changes_deep_inside_and_through_symbolic_links(
        cli, write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("d", grid=shoal.Grid(k=[0]))
        exp.command("c", "ls {data} > {out}/ls.txt", per=["k"], inputs={"data": "data"})
    """)
    (tmp_path / "data/sub").mkdir(parents=True)
    (tmp_path / "data/sub/a.txt").write_text("a")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/b.txt").write_text("b")
    (tmp_path / "data/linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "data/loop").symlink_to(tmp_path / "data")  # a loop must not hang planning
    run(path, check=True)
    assert "0 to run" in _why(cli, path)
    (tmp_path / "elsewhere/b.txt").write_text("b, edited")  # behind a link
    assert "input changed: data" in _why(cli, path)
    run(path, check=True)
    (tmp_path / "data/sub/a.txt").write_text("a, edited")  # deep inside
    assert "input changed: data" in _why(cli, path)


def test_a_task_whose_outputs_changed_removes_what_it_owned_before(cli, write_exp,
                                                                   tmp_path: Path) -> None:
    """Its old outputs were left behind, and the record that named them was overwritten:
    `shoal clean` could no longer find them."""
    path = write_exp("""
        NAME = shoal.config("name", "old")
        exp = shoal.Experiment("o", grid=shoal.Grid(k=[0]))
        exp.command("c", "echo x > {outputs}", per=["k"], outputs=["res/" + NAME + "_{k}.txt"])
        exp.command("d", "mkdir -p {outputs}", per=["k"], outputs=["keep/" + NAME])
    """)
    run(path, check=True)
    assert (tmp_path / "res/old_0.txt").exists()
    run(path, "--config", "name=new", "--yes", check=True)  # (replaces name=old's results)
    assert (tmp_path / "res/new_0.txt").exists()
    assert not (tmp_path / "res/old_0.txt").exists()
    assert not (tmp_path / "keep/old").exists()


def test_outputs_that_later_steps_write_into_stay_done(cli, write_exp, tmp_path: Path) -> None:
    """A folder output stamped with its mtime went out of date each time a later step added
    a file inside it (TRAK's shared layout): every run reran both steps."""
    path = write_exp("""
        exp = shoal.Experiment("s", grid=shoal.Grid(k=[0]))
        a = exp.command("a", "mkdir -p {outputs} && echo a > {outputs}/a.txt", per=["k"],
                        outputs=["shared/{k}"])
        exp.command("b", "echo b > shared/{k}/b.txt", per=["k"], needs=[a])
    """)
    run(path, check=True)
    rc, out, _ = cli("plan", path)
    assert rc == 0 and "0 to run" in out


def test_dangerous_paths_are_refused_through_symbolic_links_and_empty_vars(
        cli, write_exp, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(tmp_path)
    for opts, message in [
        (f'outputs=["{tmp_path}/alias/runs/x{{k}}"]', "inside the run root"),
        ('outputs=["{d}/x"], vars={"d": ""}', "takes the var 'd', which is empty"),
        ('inputs=["."]', "holds the run root"),
        ('metrics="results_{k}.csv"', "outside the task's folder"),
    ]:
        path = write_exp(f"""
            exp = shoal.Experiment("t", grid=shoal.Grid(k=[1]))
            exp.command("c", "true", per=["k"], {opts})
        """)
        rc, _, err = cli("plan", path)
        assert rc == 2 and message in err, (opts, err)


def test_int_and_float_values_keep_their_own_text_in_file_paths(write_exp,
                                                                tmp_path: Path) -> None:
    """0 and 0.0 shared one cache entry: `seed=0` filled `res/seed0.0.txt` after a float."""
    path = write_exp("""
        exp = shoal.Experiment("n", grid=shoal.Grid(seed=[0, 1], dropout=[0.0, 0.5]))
        exp.command("f", "touch {outputs}", per=["dropout"], outputs=["res/dropout{dropout}.txt"])
        exp.command("i", "touch {outputs}", per=["seed"], outputs=["res/seed{seed}.txt"])
    """)
    run(path, check=True)
    names = sorted(p.name for p in (tmp_path / "res").iterdir())
    assert names == ["dropout0.0.txt", "dropout0.5.txt", "seed0.txt", "seed1.txt"]


def test_a_glob_input_that_matches_an_output_is_refused_before_the_first_run(
        cli, write_exp) -> None:
    path = write_exp("""
        exp = shoal.Experiment("g", grid=shoal.Grid(k=[0, 1]))
        a = exp.command("a", "touch {outputs}", per=["k"], outputs=["parts/{k}.txt"])
        exp.command("b", "cat {inputs}", per=["k"], inputs=["parts/*.txt"])
    """)
    rc, _, err = cli("plan", path)
    assert rc == 2 and "input glob 'parts/*.txt' matches" in err and "needs=" in err


def test_clean_keeps_an_old_output_that_holds_a_current_one(cli, write_exp,
                                                            tmp_path: Path) -> None:
    path = write_exp("""
        OLD = shoal.config("old", True)
        exp = shoal.Experiment("c", grid=shoal.Grid(k=[0]))
        if OLD:
            exp.command("a", "mkdir -p {outputs}", per=["k"], outputs=["res/{k}"])
        else:
            exp.command("b", "mkdir -p {outputs}", per=["k"], outputs=["res/{k}/sub"])
    """)
    run(path, check=True)
    run(path, "--config", "old=false", check=True)
    rc, out, err = cli("clean", path, "--config", "old=false", "--yes")
    assert rc == 0 and "removed 1 task folder(s) and 0 output(s)" in err, err + out
    assert (tmp_path / "res/0/sub").is_dir()  # b's output, inside a's old one: kept


def test_csv_metrics_with_a_bom_a_blank_last_row_and_an_upper_case_suffix(
        write_exp, tmp_path: Path) -> None:
    path = write_exp(r"""
        exp = shoal.Experiment("m", grid=shoal.Grid(k=[0]))
        exp.command("bom", "cp bom.csv {out}/H.CSV", per=["k"], metrics="{out}/H.CSV")
        exp.command("long", "printf 'a,b\n1,2,3\n' > {out}/h.csv", per=["k"],
                    metrics="{out}/h.csv")
    """)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfepoch,loss\n1,0.5\n2,0.25\n,\n")
    res = run(path)
    doc = json.loads((tmp_path / "runs/bom/k=0/.shoal-result.json").read_text())
    assert doc["metrics"] == {"epoch": 2, "loss": 0.25}
    assert "more cells than the header" in res.stderr


def test_env_naming_a_packed_dimension_is_refused(write_exp) -> None:
    path = write_exp("""
        exp = shoal.Experiment("p", grid=shoal.Grid(seed=[0, 1]))

        @exp.step(per=["seed"], pack=["seed"], env={"SEED": "{seed}"})
        def t(ctx, seed):
            return [{} for _ in ctx.members]
    """)
    with pytest.raises(SpecError, match="names the packed dimension 'seed'"):
        load_experiment(str(path), {}).validate()
