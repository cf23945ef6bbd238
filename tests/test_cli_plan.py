from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import complete
from shoal.state.store import db_path

SMALL = """
N = shoal.config("sites", 2)
SEEDS = shoal.config("seeds", 2)
exp = shoal.Experiment("demo", grid=shoal.Grid(site=[f"s{i}" for i in range(N)], seed=range(SEEDS)))

@exp.step(per=["site"])
def prep(ctx, site): ...

@exp.step(per=["site", "seed"], needs=[prep])
def train(ctx, site, seed): ...

@exp.gather(per=[], over=train)
def combine(ctx, runs): ...
"""


def test_plan_json_has_exactly_the_documented_shape(cli, write_exp) -> None:
    path = write_exp(SMALL)
    rc, out, err = cli("plan", path, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc == {
        "experiment": "demo",
        "total": 7,
        "run": 7,
        "blocked": 0,
        "steps": {
            "prep": {"total": 2, "done": 0, "run": 2, "blocked": 0,
                     "reasons": {"missing": 2, "failed": 0, "changed": 0}},
            "train": {"total": 4, "done": 0, "run": 4, "blocked": 0,
                      "reasons": {"missing": 4, "failed": 0, "changed": 0}},
            "combine": {"total": 1, "done": 0, "run": 1, "blocked": 0,
                        "reasons": {"missing": 1, "failed": 0, "changed": 0}},
        },
    }


def test_folder_target_and_config_scale_the_grid(cli, write_exp) -> None:
    path = write_exp(SMALL)
    rc, out, _ = cli("plan", path.parent, "--json", "--config", "sites=5", "seeds=3")
    assert rc == 0
    assert json.loads(out)["total"] == 5 + 15 + 1


def test_config_file_and_cli_override(cli, write_exp, tmp_path: Path) -> None:
    path = write_exp(SMALL)
    cfg = tmp_path / "big.toml"
    cfg.write_text("sites = 4\nseeds = 4\n")
    rc, out, _ = cli("plan", path, "--json", "--config-file", cfg, "--config", "seeds=1")
    assert rc == 0
    assert json.loads(out)["total"] == 4 + 4 + 1


def test_unknown_config_key_is_an_error(cli, write_exp) -> None:
    rc, out, err = cli("plan", write_exp(SMALL), "--config", "sitse=3")
    assert rc == 2 and out == ""
    assert "config key 'sitse'" in err and "sites" in err
    assert "Traceback" not in err


def test_config_values_are_checked_against_the_default_s_type() -> None:
    """Bug: `--config seeds=true` passed for an int default (a bool is an int), so the grid
    silently had one seed; a float or list default took any text."""
    from shoal.errors import ConfigError
    from shoal.spec.configuration import _coerce

    assert _coerce("seeds", "7", 3) == 7 and _coerce("seeds", 4.0, 3) == 4
    assert _coerce("lr", 1, 0.1) == 1.0 and _coerce("lr", "1e-3", 0.1) == 0.001
    assert _coerce("flag", "yes", False) is True
    assert _coerce("factors", [1, 2], [0, 1, 5]) == [1, 2]
    for name, value, default, words in [
        ("seeds", True, 3, "expected an integer (the default is 3), got true"),
        ("seeds", 2.5, 3, "expected an integer"),
        ("seeds", "five", 3, "expected an integer"),
        ("lr", False, 0.1, "expected a number (the default is 0.1), got false"),
        ("lr", "fast", 0.1, "expected a number"),
        ("factors", 1, [0, 1, 5], "expected a list (the default is [0, 1, 5]), got 1: "
                                  "write factors=[1] for one value"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            _coerce(name, value, default)


def test_plan_why_and_only(cli, write_exp, load) -> None:
    path = write_exp(SMALL)
    complete(load(path), steps=["prep"])
    rc, out, _ = cli("plan", path, "--why", "--only", "site=s1")
    assert rc == 0
    assert "train[site=s1,seed=0]  never ran" in out
    assert "site=s0" not in out
    rc, out, _ = cli("plan", path, "--json", "--only", "site=s1")
    doc = json.loads(out)
    assert doc["steps"]["prep"] == {"total": 1, "done": 1, "run": 0, "blocked": 0,
                                    "reasons": {"missing": 0, "failed": 0, "changed": 0}}
    assert doc["steps"]["combine"]["total"] == 0


def test_status_counts_and_rescan_rebuilds_a_deleted_store(cli, write_exp, load) -> None:
    path = write_exp(SMALL)
    exp = load(path)
    complete(exp, failed=[("train", "site=s0/seed=1")])
    rc, out, _ = cli("status", path, "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["steps"]["train"]["done"] == 3 and doc["steps"]["train"]["failed"] == 1
    before = doc
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path(exp.root)) + suffix).unlink(missing_ok=True)
    # without a store, result files found in the task folders still count as done
    rc, out, _ = cli("status", path, "--json")
    assert json.loads(out)["done"] == before["done"]
    rc, out, err = cli("status", path, "--json", "--rescan")
    assert rc == 0 and "rescanned" in err
    assert json.loads(out) == before
    rc, out, _ = cli("status", path)
    assert "demo: 5 of 7 tasks done" in out  # combine waits for the failed train task


def test_root_option_and_env(cli, write_exp, tmp_path: Path, load, monkeypatch) -> None:
    path = write_exp(SMALL)
    exp = load(path)
    exp.root = tmp_path / "elsewhere"
    complete(exp)
    rc, out, _ = cli("plan", path, "--json", "--root", tmp_path / "elsewhere")
    assert rc == 0 and json.loads(out)["run"] == 0
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path / "elsewhere"))
    rc, out, _ = cli("plan", path, "--json")
    assert json.loads(out)["run"] == 0


ERRORS = {
    "unknown dimension in per": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a"], seed=[0]))
        @exp.step(per=["site", "sed"])
        def train(ctx, site, sed): ...
        """,
        ["step 'train'", "'sed'", "fix"],
    ),
    "needs that cannot project": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a"], seed=[0]))
        @exp.step(per=["site", "seed"])
        def train(ctx, site, seed): ...
        @exp.step(per=["site"], needs=[train])
        def report(ctx, site): ...
        """,
        ["step 'report'", "'train'", "['seed']", "gather"],
    ),
    "cycle": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a"]))
        @exp.step(per=["site"], needs=["b"])
        def a(ctx, site): ...
        @exp.step(per=["site"], needs=["a"])
        def b(ctx, site): ...
        """,
        ["cycle", "a -> b -> a"],
    ),
    "duplicate step name": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a"]))
        @exp.step(per=["site"])
        def a(ctx, site): ...
        @exp.step(per=["site"], name="a")
        def b(ctx, site): ...
        """,
        ["step 'a'", "declared twice", "name="],
    ),
    "non-scalar grid value": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=[{"id": 1}]))
        """,
        ["dimension 'site'", "not a scalar"],
    ),
    "empty grid": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=[]))
        """,
        ["dimension 'site'", "no values"],
    ),
    "empty grid after where": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a"], where=lambda p: False))
        @exp.step(per=["site"])
        def a(ctx, site): ...
        """,
        ["empty", "where="],
    ),
    "unknown template placeholder": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(test_set=[0, 1]))
        exp.command("locate", "python locator.py --sample_data {test_st} --out {out}/pred",
                    per=["test_set"])
        """,
        ["step 'locate'", "'{test_st}'", "test_set"],
    ),
    "value that cannot become a path part": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a", ""]))
        @exp.step(per=["site"])
        def prep(ctx, site): ...
        """,
        ["step 'prep'", "dimension 'site'", "folder name"],
    ),
    "unknown function parameter": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a"]))
        @exp.step(per=["site"])
        def prep(ctx, site, seed): ...
        """,
        ["step 'prep'", "'seed'", "per="],
    ),
    "a placeholder in quotes": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(v=["a b"]))
        exp.command("c", 'echo "{v}" > {out}/v.txt', per=["v"])
        """,
        ["step 'c'", 'puts {v} in quotes ("{v}")', "write {v} without them"],
    ),
    "a field that cannot be filled": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(lr=[0.1, 0.2]))
        exp.command("c", "train --lr {lr:.2q}", per=["lr"])
        """,
        ["step 'c'", "cannot be filled for lr=0.1", "ValueError", "fix the field"],
    ),
    "an index into a number": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(a=[1]))
        exp.command("c", "echo {a[0]}", per=["a"])
        """,
        ["step 'c'", "cannot be filled for a=1", "TypeError"],
    ),
    "a first parameter that is a dimension": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(a=[1]))
        @exp.step(per=["a"])
        def s(a): ...
        """,
        ["step 's'", "first parameter 'a' is a dimension", "def s(ctx, a)"],
    ),
    "an async step function": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(a=[1]))
        @exp.step(per=["a"])
        async def s(ctx, a): ...
        """,
        ["step 's'", "is an async function", "plain def"],
    ),
    "a generator step function": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(a=[1]))
        @exp.step(per=["a"])
        def s(ctx, a):
            yield {"x": 1}
        """,
        ["step 's'", "is a generator (it yields)"],
    ),
    "gather over a step lacking the dimension": (
        """
        exp = shoal.Experiment("e", grid=shoal.Grid(site=["a"], seed=[0]))
        @exp.step(per=["site"])
        def prep(ctx, site): ...
        @exp.gather(per=["seed"], over=prep)
        def g(ctx, seed, runs): ...
        """,
        ["gather 'g'", "['seed']"],
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_invalid_definitions_fail_cleanly(case: str, cli, write_exp, tmp_path: Path) -> None:
    body, needles = ERRORS[case]
    path = write_exp(body)
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in ("plan", "status"):
        rc, out, err = cli(command, path)
        assert rc == 2, (case, out, err)
        assert out == ""
        assert "Traceback" not in err
        assert err.startswith("shoal: error: ") and err.count("\n") == 1, err
        for needle in needles:
            assert needle in err, (case, needle, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_experiment_and_folder_without_experiment(cli, tmp_path: Path) -> None:
    rc, _, err = cli("plan", tmp_path / "nope.py")
    assert rc == 2 and "not found" in err
    rc, _, err = cli("plan", tmp_path)
    assert rc == 2 and "experiment.py" in err


def test_real_process_end_to_end(write_exp, tmp_path: Path) -> None:
    """The installed console script, in a fresh interpreter."""
    path = write_exp(SMALL)
    exe = Path(sys.executable).with_name("shoal")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "shoal.cli.main"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    res = subprocess.run([*cmd, "plan", str(path), "--json"], capture_output=True, text=True,
                         env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["total"] == 7
    bad = write_exp(SMALL.replace('per=["site"]', 'per=["sit"]'), name="bad.py")
    res = subprocess.run([*cmd, "plan", str(bad)], capture_output=True, text=True, env=env,
                         check=False)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "'sit'" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["run", "-j", "0"], "argument -j/--jobs: 0 must be >= 1"),
    (["run", "--retries", "-1"], "argument --retries: -1 must be >= 0"),
    (["run", "--grace", "-5"], "argument --grace: -5 must be >= 0"),
    (["run", "--progress-interval", "0"], "argument --progress-interval: 0 must be > 0"),
    (["run", "--max-requeues", "x"], "argument --max-requeues: 'x' is not a number"),
    (["run", "--grace", "nan"], "argument --grace: 'nan' is not a number"),
    (["logs", "--tail", "-2"], "argument --tail: -2 must be >= 1"),
    (["status", "--failures", "-1"], "argument --failures: -1 must be >= 0"),
    (["plan", "--limit", "-1"], "argument --limit: -1 must be >= 0"),
])
def test_bad_option_values_are_usage_errors(cli, write_exp, args, words) -> None:
    """Bug: negative retries, grace, tails, limits… were taken (`--tail -2` dropped the
    first two lines)."""
    path = write_exp(SMALL)
    extra = ["prep"] if args[0] == "logs" else []
    with pytest.raises(SystemExit) as exc:
        cli(args[0], path, *extra, *args[1:])
    assert exc.value.code == 2
    assert words in cli.capsys.readouterr().err


def test_results_options_and_paths_are_one_clear_error(cli, write_exp, load, tmp_path):
    """Bugs: `--level 95` (a percentage), an output file in a missing folder and a run root
    that is a file gave tracebacks; `--by a a` repeated a column."""
    path = write_exp(SMALL)
    complete(load(path))
    rc, _, err = cli("results", path, "--by", "site", "--level", "95")
    assert rc == 2
    assert "--level 95: the confidence level is a fraction between 0 and 1 (95 %: " \
           "--level 0.95)" in err
    rc, out, err = cli("results", path, "--by", "site", "site", "--format", "csv")
    assert rc == 0, err
    assert out.splitlines()[0].startswith("site,over,metric,n,")
    rc, _, err = cli("results", path, "--format", "json", "-o", tmp_path / "no/such/x.json")
    assert rc == 2 and "Traceback" not in err
    assert f"{tmp_path}/no/such/x.json: No such file or directory; check this path" in err
    (tmp_path / "afile").write_text("")
    rc, _, err = cli("run", path, "--root", tmp_path / "afile", "--progress", "none")
    assert rc == 2 and "Traceback" not in err and "afile" in err


def test_print_at_import_keeps_json_output_clean(cli, write_exp) -> None:
    """Bug: a print() in the experiment file went into `plan --json`'s output."""
    path = write_exp('print("building the grid")\n' + SMALL)
    rc, out, err = cli("plan", path, "--json")
    assert rc == 0
    assert json.loads(out)["total"] > 0
    assert "building the grid" in err


def test_a_syntax_error_shows_the_user_s_line(cli, write_exp) -> None:
    path = write_exp("exp = shoal.Experiment('x', grid=shoal.Grid(i=[0])\n")
    rc, _, err = cli("plan", path)
    assert rc == 2
    assert "SyntaxError" in err and f'File "{path}", line 2' in err
    assert "importlib" not in err and "loader.py" not in err


def test_plan_without_config_notes_the_last_run_s_config(cli, write_exp) -> None:
    """`plan`/`run` without --config plan the defaults: say so when the last run used another
    config (a plain `shoal run` would otherwise quietly redo the gathers over the default
    grid); the read-only views reuse it."""
    from test_run import run

    path = write_exp(SMALL)
    assert run(path, "--config", "seeds=1").returncode == 0
    rc, out, err = cli("plan", path, "--json")
    assert rc == 0
    assert "the last run on this root used --config seeds=1; this one uses the defaults" in err
    assert json.loads(out)["run"] > 0
    rc, out, err = cli("plan", path, "--json", "--config", "seeds=1")
    assert rc == 0 and json.loads(out)["run"] == 0 and "note" not in err
    rc, out, err = cli("status", path)
    assert rc == 0 and "using the config of the last run: seeds=1" in err


def test_a_closed_output_pipe_is_a_quiet_exit(cli, write_exp, monkeypatch) -> None:
    """Regression guard: `shoal results | head` ends quietly, also now that other OSErrors
    about a path are one error line (BrokenPipeError is an OSError)."""
    import shoal.cli.main

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(shoal.cli.main, "cmd_plan", broken)
    rc, _, err = cli("plan", write_exp(SMALL))
    assert rc == 0 and err == ""
