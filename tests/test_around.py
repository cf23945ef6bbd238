"""What a step needs around it: vars=, env=, setup=, container= (golden command text) and a
command's metrics=, end to end through the CLI."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from shoal.plan.build import build_plan
from shoal.spec.around import Container
from shoal.spec.loader import load_experiment
from shoal.worker.wrap import container_argv, with_setup
from test_run import run


def _result(tmp_path: Path, rel: str) -> dict:
    return json.loads((tmp_path / "runs" / rel / ".shoal-result.json").read_text())


def test_vars_fill_templates_quoted_and_enter_the_fingerprint(cli, write_exp,
                                                               tmp_path: Path) -> None:
    body = """
        EPOCHS = shoal.config("epochs", 3)
        exp = shoal.Experiment("v", grid=shoal.Grid(test_set=[0, 1]),
                               vars={"python_env": "my env/bin"})
        exp.command("locate", "echo {max_epochs} {python_env} > {out}/args.txt",
                    per=["test_set"], vars={"max_epochs": EPOCHS})

        @exp.step(per=["test_set"], vars={"label": "x y"})
        def f(ctx, test_set):
            return {"label": ctx.vars["label"], "env": ctx.vars["python_env"]}
    """
    path = write_exp(body)
    run(path, check=True)
    assert (tmp_path / "runs/locate/test_set=0/args.txt").read_text() == "3 my env/bin\n"
    assert _result(tmp_path, "f/test_set=1")["metrics"] == {"label": "x y", "env": "my env/bin"}
    rc, out, _ = cli("plan", path, "--why", "--config", "epochs=5")
    assert "locate[test_set=0]  vars of 'locate' changed" in out
    assert "2 to run" in out  # f keeps its vars
    path.write_text(path.read_text().replace("echo {max_epochs}", "echo '{max_epochs}'"))
    rc, _, err = cli("plan", path)
    assert rc == 2 and "puts {max_epochs} in quotes" in err


def test_env_reaches_commands_and_functions_and_is_undone_for_the_next_task(
        write_exp, tmp_path: Path) -> None:
    path = write_exp("""
        import os
        exp = shoal.Experiment("e", grid=shoal.Grid(k=[0, 1]), env={"SHARED": "all"})
        exp.command("c", "echo $MY_VAR $SHARED $TF_NUM_INTRAOP_THREADS > {out}/env.txt",
                    per=["k"], env={"MY_VAR": "k={k} at {out}"}, cpus=1)

        @exp.step(per=["k"], env={"ONLY_A": "{k}"})
        def a(ctx, k):
            return {"v": os.environ["ONLY_A"], "s": os.environ["SHARED"]}

        @exp.step(per=["k"], needs=[a])
        def b(ctx, k):
            return {"leaked": os.environ.get("ONLY_A"), "s": os.environ["SHARED"]}
    """)
    run(path, "-j", "1", check=True)
    out0 = tmp_path / "runs/c/k=0"
    assert (out0 / "env.txt").read_text() == f"k=0 at {out0} all 1\n"
    assert _result(tmp_path, "a/k=1")["metrics"] == {"v": "1", "s": "all"}
    # one worker ran a then b: a's variable is gone again for b
    assert _result(tmp_path, "b/k=1")["metrics"] == {"leaked": None, "s": "all"}


def test_setup_lines_run_before_the_command_and_their_failure_fails_the_task(
        write_exp, tmp_path: Path) -> None:
    (tmp_path / "venv/bin").mkdir(parents=True)
    (tmp_path / "venv/bin/activate").write_text("export ACTIVATED=yes\n")
    path = write_exp("""
        exp = shoal.Experiment("s", grid=shoal.Grid(k=[0]), setup="source venv/bin/activate")
        exp.command("good", "echo $ACTIVATED > {out}/a.txt", per=["k"])
        exp.command("bad", "echo never > {out}/a.txt", per=["k"], setup=["false"])
    """)
    res = run(path)
    assert res.returncode == 1
    assert (tmp_path / "runs/good/k=0/a.txt").read_text() == "yes\n"
    assert not (tmp_path / "runs/bad/k=0/a.txt").exists()
    assert "bad[k=0]: command exited with status 86 (its setup= lines failed" in res.stderr


def test_metrics_from_log_patterns_csv_and_json_files(write_exp, tmp_path: Path) -> None:
    path = write_exp(r"""
        exp = shoal.Experiment("m", grid=shoal.Grid(k=[0]))
        exp.command("log", "echo 'epoch 1 val_loss: 0.9'; echo 'epoch 2 val_loss: 0.5'",
                    per=["k"], metrics={"val_loss": r"val_loss: (\S+)", "epochs": r"epoch (\d+)"})
        exp.command("csv", "printf 'epoch,loss,note\n1,0.9,a\n2,0.25,b\n' > {out}/log.csv",
                    per=["k"], metrics="{out}/log.csv")
        exp.command("js", "echo '{{\"acc\": 0.75}}' > results_{k}.json", per=["k"],
                    metrics="results_{k}.json", outputs=["results_{k}.json"])
        exp.command("nomatch", "echo nothing", per=["k"], metrics={"loss": r"loss=(\S+)"})
        exp.command("nan", "echo loss=abc", per=["k"], metrics={"loss": r"loss=(\S+)"})
        exp.command("nofile", "true", per=["k"], metrics="{out}/m.json")
    """)
    res = run(path)
    assert _result(tmp_path, "log/k=0")["metrics"] == {"val_loss": 0.5, "epochs": 2}
    assert _result(tmp_path, "csv/k=0")["metrics"] == {"epoch": 2, "loss": 0.25, "note": "b"}
    assert _result(tmp_path, "js/k=0")["metrics"] == {"acc": 0.75}
    err = res.stderr
    assert "metric 'loss': the pattern 'loss=(\\\\S+)' (metrics=) matched nothing" in err
    assert "matched 'abc', which is not a number" in err
    assert "metrics file" in err and "m.json (metrics=) was not written" in err
    assert res.returncode == 1


def test_metrics_patterns_read_only_this_attempt(write_exp, tmp_path: Path) -> None:
    path = write_exp(r"""
        exp = shoal.Experiment("m", grid=shoal.Grid(k=[0]))
        exp.command("c", "test -e flag && echo done || (echo 'loss: 0.1'; exit 1)", per=["k"],
                    metrics={"loss": r"loss: (\S+)"})
    """)
    assert run(path).returncode == 1
    (tmp_path / "flag").write_text("")
    res = run(path)  # the first attempt's "loss: 0.1" is in the log, but not this one's
    assert res.returncode == 1 and "matched nothing in this attempt's log" in res.stderr


def test_bare_dash_values_warn_and_nul_values_are_errors(cli, write_exp) -> None:
    path = write_exp("""
        exp = shoal.Experiment("d", grid=shoal.Grid(name=["-rf", "ok"]))
        exp.command("c", "echo {name}", per=["name"])
    """)
    rc, _, err = cli("plan", path)
    assert rc == 0
    assert "{name} is a bare argument" in err and "name='-rf' starts with '-'" in err
    path = write_exp("""
        exp = shoal.Experiment("d", grid=shoal.Grid(name=["-rf"]))
        exp.command("c", "echo --name={name}", per=["name"])
    """)
    rc, _, err = cli("plan", path)
    assert rc == 0 and "warning" not in err
    path = write_exp("""
        exp = shoal.Experiment("d", grid=shoal.Grid(name=["a\\0b"]))
        exp.command("c", "echo {name}", per=["name"])
    """)
    rc, _, err = cli("plan", path)
    assert rc == 2 and "NUL byte" in err


def test_apptainer_command_text_is_the_seed_s_style() -> None:
    c = Container("locator.sif", bind=("/gscratch",))
    argv, env = container_argv(c, "python /locator/scripts/locator.py --out /r/locate/x",
                               cwd="/home/me/locator", root="/home/me/locator/runs",
                               env={"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0,1"},
                               gpus=True)
    assert shlex.join(argv) == (
        "apptainer exec --cleanenv --bind /home/me/locator --bind /home/me/locator/runs "
        "--bind /gscratch --nv --pwd /home/me/locator locator.sif /bin/sh -c "
        "'python /locator/scripts/locator.py --out /r/locate/x'")
    assert env == {"APPTAINERENV_OMP_NUM_THREADS": "2",
                   "APPTAINERENV_CUDA_VISIBLE_DEVICES": "0,1"}
    argv, env = container_argv(Container("img", runtime="/usr/bin/podman"), "true",
                               cwd="/e", root="/e/runs", env={"A": "1"}, gpus=False)
    assert argv == ["/usr/bin/podman", "run", "--rm", "--init", "-v", "/e:/e", "-v",
                    "/e/runs:/e/runs", "-w", "/e", "-e", "A", "img", "/bin/sh", "-c", "true"]
    assert env == {}
    assert with_setup(["module load apptainer"], "", ["apptainer", "exec", "x y"]).split(
        "\n")[1:] == ["set -e", "module load apptainer", "set +e", "SHOAL_SETUP_DONE=1",
                      "exec apptainer exec 'x y'"]


def test_container_and_setup_compose_in_the_dispatched_command(write_exp, tmp_path) -> None:
    path = write_exp("""
        exp = shoal.Experiment("c", grid=shoal.Grid(test_set=[0]), setup="module load apptainer",
                               container=shoal.Container("locator.sif"))
        exp.command("locate", "python /locator/scripts/locator.py --sample_data {sample} "
                    "--out {out}/pred", per=["test_set"],
                    inputs={"sample": "data/potr_m_pred{test_set}.txt"})
    """)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/potr_m_pred0.txt").write_text("x")
    exp = load_experiment(str(path), {})
    plan = build_plan(exp, exp.root)
    from shoal.schedule.dispatch import SpecBuilder
    from shoal.state.store import Store

    with Store.open(exp.root) as store:
        spec = SpecBuilder(plan, store, True, lambda: None).build(
            plan.steps["locate"], 0, 1, 2, [])
    assert spec.argv is not None and spec.argv[1:] == ["-c", spec.command]
    lines = (spec.command or "").splitlines()
    assert lines[1:5] == ["set -e", "module load apptainer", "set +e", "SHOAL_SETUP_DONE=1"]
    inner = (f"python /locator/scripts/locator.py --sample_data {tmp_path}/data/potr_m_pred0.txt"
             f" --out {tmp_path}/runs/locate/test_set=0/pred")
    assert lines[5] == ("exec apptainer exec --cleanenv --bind " + f"{tmp_path} --bind "
                        f"{tmp_path}/runs --pwd {tmp_path} locator.sif /bin/sh -c "
                        + shlex.quote(inner))
    assert spec.env()["APPTAINERENV_OMP_NUM_THREADS"] == "2"


def test_the_experiment_s_container_wraps_its_commands_only(write_exp) -> None:
    path = write_exp("""
        exp = shoal.Experiment("c", grid=shoal.Grid(k=[0]), container="img.sif")
        exp.command("in_it", "true", per=["k"])
        exp.command("outside", "true", per=["k"], container=False)

        @exp.step(per=["k"])
        def f(ctx, k):
            pass
    """)
    exp = load_experiment(str(path), {})
    exp.validate()
    assert exp.around("in_it").container == Container("img.sif")
    assert exp.around("outside").container is None
    assert exp.around("f").container is not None  # (function steps: never wrapped)


def test_setup_lines_run_before_a_function_step_s_worker(write_exp, tmp_path: Path) -> None:
    (tmp_path / "env.sh").write_text("export FROM_SETUP=yes\n")
    path = write_exp("""
        import os
        exp = shoal.Experiment("s", grid=shoal.Grid(k=[0, 1]))

        @exp.step(per=["k"], setup="source env.sh")
        def with_setup(ctx, k):
            return {"v": os.environ.get("FROM_SETUP")}

        @exp.step(per=["k"], needs=[with_setup])
        def without(ctx, k):
            return {"v": os.environ.get("FROM_SETUP")}

        @exp.step(per=["k"], setup=["false"])
        def broken(ctx, k):
            return {}
    """)
    res = run(path, "-j", "1")
    assert _result(tmp_path, "with_setup/k=1")["metrics"] == {"v": "yes"}
    assert _result(tmp_path, "without/k=1")["metrics"] == {"v": None}  # its own worker
    assert res.returncode == 1 and "broken[k=0]" in res.stderr
    assert "setup= lines ran before it started: check them (false)" in res.stderr


def test_a_function_step_s_setup_lines_go_into_its_slurm_array_script() -> None:
    from shoal.backends.slurm import script

    text = script.render(job_name="j", size=2, output="o/%A_%a.out",
                         python="/py", submission="/sub", offset=0, cpus=1,
                         setup=["module load cuda/12.1", "source env.sh"])
    body = text.split("\n\n", 1)[1]
    assert body.startswith("set -e\nmodule load cuda/12.1\nsource env.sh\nset +e\n")
    assert body.rstrip().endswith("exec /py -m shoal.backends.slurm.element /sub 0")


def test_bare_dash_warnings_see_redirections_negative_numbers_and_double_dash(cli,
                                                                           write_exp) -> None:
    for template, warned in [
        ("echo {name}>out.txt", True),
        ("echo {name}; true", True),
        ("head -n 1 x | grep {name}|wc", True),
        ("echo -- {name}", False),
        ("echo --name={name}", False),
        ("tail {shift} f", True),
    ]:
        path = write_exp(f"""
            exp = shoal.Experiment("d", grid=shoal.Grid(name=["-n", "ok"], shift=[-3, 2]))
            exp.command("c", {template!r}, per=["name", "shift"])
        """)
        rc, _, err = cli("plan", path)
        assert rc == 0
        assert ("bare argument" in err) == warned, (template, err)


def test_a_setup_line_that_exits_the_shell_fails_the_task(write_exp, tmp_path: Path) -> None:
    """`exit 0` in setup= ended the shell with status 0: the task was done, its command
    never ran."""
    path = write_exp("""
        exp = shoal.Experiment("s", grid=shoal.Grid(k=[0]))
        exp.command("c", "echo ran > {out}/ran.txt", per=["k"], setup=["true", "exit 0"])
    """)
    res = run(path)
    assert res.returncode == 1 and "its setup= lines failed" in res.stderr
    assert not (tmp_path / "runs/c/k=0/ran.txt").exists()
    log = (tmp_path / "runs/c/k=0/.shoal.log").read_text()
    assert "setup= lines of the step ended the shell (status 0)" in log
