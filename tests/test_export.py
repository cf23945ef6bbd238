"""shoal export --to mlflow / tensorboard, read back with the projects' own readers (MLflow's
client, TensorBoard's event accumulator); only new or changed tasks go out again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_run import run

EXP = """
import os
exp = shoal.Experiment("exp1", grid=shoal.Grid(lr=[1, 2], seed=range(2)))

@exp.step(per=["lr", "seed"])
def train(ctx, lr, seed):
    if os.environ.get("FAIL") == f"{lr},{seed}":
        raise RuntimeError("planned failure")
    for epoch in range(1, 4):
        ctx.log(epoch=epoch, loss=1.0 / (lr * epoch) + seed)
    return {"final_loss": 1.0 / (lr * 3) + seed, "size": lr * 10}

@exp.gather(per=[], over=train, allow_missing=True)
def combine(ctx, runs):
    return {"n": len(runs)}
"""


def _export(cli, path: Path, *to: str) -> str:
    rc, _, err = cli("export", path, "--to", *to)
    assert rc == 0, err
    return err


def test_mlflow_export_reads_back_and_only_changes_go_again(cli, write_exp,
                                                            tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    path = write_exp(EXP)
    run(path, env={**os.environ, "FAIL": "2,1"})
    store = tmp_path / "mlruns"
    err = _export(cli, path, "mlflow", str(store))
    assert "exported 4 tasks (train 4)" in err  # (the gather waits for the failure)
    client = MlflowClient(tracking_uri=store.as_uri())
    eid = client.get_experiment_by_name("exp1").experiment_id
    runs = client.search_runs([eid])
    parents = {r.data.tags["shoal.step"]: r for r in runs
               if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"train"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")
                == parents["train"].info.run_id]
    assert len(children) == 4
    one = next(r for r in children if r.data.params == {"lr": "2", "seed": "0"})
    assert one.data.metrics["final_loss"] == pytest.approx(1 / 6)
    assert one.info.status == "FINISHED" and one.info.run_name == "train[lr=2,seed=0]"
    assert Path(one.data.tags["shoal.folder"]) == tmp_path / "runs/train/lr=2/seed=0"
    assert float(one.data.tags["shoal.duration_s"]) >= 0
    hist = client.get_metric_history(one.info.run_id, "loss")
    assert sorted((m.step, round(m.value, 6)) for m in hist) == [
        (1, 0.5), (2, 0.25), (3, round(1 / 6, 6))]
    failed = next(r for r in children if r.data.params == {"lr": "2", "seed": "1"})
    assert failed.info.status == "FAILED" and failed.data.tags["shoal.status"] == "failed"
    # again: nothing changed, nothing goes out
    err = _export(cli, path, "mlflow", str(store))
    assert "exported 0 tasks" in err and "4 unchanged" in err
    # the failure fixed: that task (and the gather) go out again, their old runs deleted
    run(path, check=True)
    err = _export(cli, path, "mlflow", str(store))
    assert "exported 2 tasks (train 1, combine 1)" in err
    active = client.search_runs([eid])
    again = [r for r in active if r.data.params == {"lr": "2", "seed": "1"}]
    assert len(again) == 1 and again[0].info.status == "FINISHED"
    assert client.get_run(failed.info.run_id).info.lifecycle_stage == "deleted"


def test_tensorboard_export_reads_back_with_its_event_reader(cli, write_exp,
                                                             tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    path = write_exp(EXP)
    run(path, check=True)
    logdir = tmp_path / "tb"
    assert "exported 5 tasks" in _export(cli, path, "tensorboard", str(logdir))
    ea = EventAccumulator(str(logdir / "train/lr=2/seed=0"))
    ea.Reload()
    loss = ea.Tensors("loss")
    assert [e.step for e in loss] == [1, 2, 3]
    from tensorboard.util import tensor_util

    assert tensor_util.make_ndarray(loss[0].tensor_proto).item() == pytest.approx(0.5)
    final = ea.Tensors("final/final_loss")
    assert tensor_util.make_ndarray(final[0].tensor_proto).item() == pytest.approx(1 / 6)
    content = ea.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["lr"].number_value == 2 and start.hparams["seed"].number_value == 0
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # STATUS_SUCCESS
    top = EventAccumulator(str(logdir / "train"))
    top.Reload()
    exp = metadata.parse_experiment_plugin_data(
        top.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    assert {h.name for h in exp.hparam_infos} == {"lr", "seed"}
    assert {m.name.tag for m in exp.metric_infos} == {"final/final_loss", "final/size"}
    # a task that ran again is written anew; the others are left alone
    shutil.rmtree(tmp_path / "runs/train/lr=1/seed=1")
    run(path, check=True)
    assert "exported 2 tasks (train 1, combine 1)" in _export(cli, path, "tensorboard",
                                                             str(logdir))
    assert len(list((logdir / "train/lr=1/seed=1").glob("events.*"))) == 1
