"""TRAK data attribution over several checkpoints: map (featurize + score per checkpoint),
then gather (finalize_scores) — seed 004's Slurm array + gather.py as a shoal experiment.

N tiny MLPs are trained on 300 of scikit-learn's digits (seed = model_id); for each
checkpoint TRAK featurizes the 300 train examples and computes the gradients of 50 val
examples (the targets); the gather combines the checkpoints into a 300 × 50 score matrix
(``runs/scores/scores.npy``: how much each train example helped each target). All on a
CPU, offline, in well under a minute::

    shoal run examples/trak -j 2
    shoal run examples/trak -j 2 --config epochs=7    # retrain: featurize + gather rerun

TRAK keeps its state in one ``save_dir`` (``trak_results/`` in this folder) shared by all
checkpoints, as in its tutorial, and silently keeps a checkpoint's old features if they are
still there (``Model ID 0 already finalized, skipping``). So ``featurize`` declares the two
paths each checkpoint owns there as ``outputs=``: shoal removes them before the task runs
again, and the task counts as done only while they exist. See README.md.

torch, trak and ``model.py`` are imported inside the step bodies, so ``shoal plan`` stays
fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import shoal

if TYPE_CHECKING:
    import pandas as pd

N_CHECKPOINTS = shoal.config("checkpoints", 3)
EPOCHS = shoal.config("epochs", 5)
# Sizes (model.py's defaults). TRAK records proj_dim and the train set size in
# trak_results/metadata.json and refuses another value: delete trak_results/ and runs/ after
# changing them.
HIDDEN = 32
N_TRAIN = 300
N_VAL = 50
PROJ_DIM = 64
EXP_NAME = "digits_val"  # TRAK's experiment name (the set of targets scored)

exp = shoal.Experiment(
    "trak",
    grid=shoal.Grid(model_id=range(N_CHECKPOINTS)),
    # TRAKer's save_dir, relative to this folder (tasks run here); one for all checkpoints
    vars={"save_dir": "trak_results"},
)

DATA = f"n_train={N_TRAIN},n_val={N_VAL}"


@exp.step(per=["model_id"], version=f"epochs={EPOCHS},hidden={HIDDEN},{DATA}")
def train(ctx, model_id: int) -> dict[str, Any]:
    """One checkpoint: an MLP trained with seed model_id; model.pt in the task's folder."""
    from model import train as train_mlp

    return train_mlp(ctx.out / "model.pt", seed=model_id, epochs=EPOCHS, hidden=HIDDEN,
                     n_train=N_TRAIN, n_val=N_VAL)


@exp.step(
    per=["model_id"],
    needs=[train],
    version=f"proj_dim={PROJ_DIM},exp={EXP_NAME},{DATA}",
    # What this checkpoint owns in TRAK's save_dir: its features, gradients and target
    # gradients (<model_id>/) and its registration (id_<model_id>.json, which says
    # "featurized, finalized": while it exists TRAK skips featurizing the checkpoint again).
    # metadata.json, experiments.json and scores/<exp>.mmap are shared by all checkpoints
    # and belong to no task.
    outputs=["{save_dir}/{model_id}", "{save_dir}/id_{model_id}.json"],
)
def featurize(ctx, model_id: int) -> dict[str, Any]:
    """TRAK's map for one checkpoint: featurize the train set, finalize the features, and
    compute the targets' gradients (load_checkpoint, featurize, finalize_features,
    start_scoring_checkpoint, score), in the shared save_dir."""
    from model import featurize_and_score

    state = featurize_and_score(
        ctx.input(train).out / "model.pt", model_id, save_dir=ctx.vars["save_dir"],
        exp_name=EXP_NAME, hidden=HIDDEN, n_train=N_TRAIN, n_val=N_VAL, proj_dim=PROJ_DIM,
    )
    return {**state, "n_train": N_TRAIN, "n_targets": N_VAL}


# No outputs= here: finalize_scores rewrites scores/<exp>.mmap in full and only sets
# "scores_finalized" in experiments.json, but needs both to exist (the featurize tasks create
# them), so the gather must not own (and have shoal delete) either.
@exp.gather(over=featurize)
def scores(ctx, runs: pd.DataFrame) -> dict[str, Any]:
    """TRAK's gather: finalize_scores over the checkpoints that were featurized; the
    (N_TRAIN, N_VAL) matrix in scores.npy, and a sanity check of it as metrics."""
    import numpy as np
    from model import finalize_scores, summarize

    model_ids = sorted(int(m) for m in runs["model_id"])
    matrix = finalize_scores(ctx.vars["save_dir"], model_ids, exp_name=EXP_NAME,
                             hidden=HIDDEN, n_train=N_TRAIN, proj_dim=PROJ_DIM)
    np.save(ctx.out / "scores.npy", matrix)
    return {"n_checkpoints": len(model_ids), **summarize(matrix, n_train=N_TRAIN, n_val=N_VAL)}
