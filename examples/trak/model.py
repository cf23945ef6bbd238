"""TRAK on scikit-learn's digits with tiny torch MLPs: data, model, training, and TRAK's
calls as in its Slurm tutorial (featurize and score per checkpoint, then one gather).

Plain Python, no shoal: ``experiment.py`` calls these functions inside its steps. torch,
trak and scikit-learn are imported inside the functions, so importing this module is cheap.

traker 0.3.2 keeps everything in one ``save_dir`` shared by all checkpoints:

- ``<model_id>/`` (grads, features, out_to_loss, target grads, ``_is_featurized``) and
  ``id_<model_id>.json`` (``is_featurized``/``is_finalized``): one checkpoint's state,
  written only by that checkpoint's featurize task;
- ``metadata.json``, ``experiments.json`` and ``scores/<exp_name>.mmap``: shared.

A checkpoint whose ``id_<model_id>.json`` says it is finalized is silently *not* featurized
again: a rerun after retraining scores with the old features. So the featurize task owns
(and shoal removes before it runs again) ``<model_id>/`` and ``id_<model_id>.json``, and
:func:`featurize_and_score` refuses to start on a checkpoint that ``save_dir`` already holds.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

N_TRAIN = 300  # train examples TRAK attributes to (the first N_TRAIN of a fixed shuffle)
N_VAL = 50  # targets scored (the next N_VAL)
HIDDEN = 32
PROJ_DIM = 64  # TRAK's JL dimension (its default 2048 is for ResNets on a GPU)
BATCH = 100
EXP_NAME = "digits_val"  # TRAK's experiment name: the set of targets being scored
LOCK_NAME = ".shared.lock"  # in save_dir, see save_dir_lock


class StaleStateError(RuntimeError):
    """save_dir already holds a checkpoint's state: TRAK would reuse it silently."""


def load_data(n_train: int = N_TRAIN, n_val: int = N_VAL) -> dict[str, Any]:
    """The same split every time: float32 pixels in [0, 1] (64 of them), int64 labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)  # bundled with scikit-learn: no download
    if n_train + n_val > len(y):
        raise ValueError(f"n_train + n_val = {n_train + n_val} > {len(y)} digits")
    order = np.random.default_rng(0).permutation(len(y))
    x = (x[order] / 16.0).astype(np.float32)
    y = y[order].astype(np.int64)
    return {"x_train": x[:n_train], "y_train": y[:n_train],
            "x_val": x[n_train:n_train + n_val], "y_val": y[n_train:n_train + n_val]}


def make_model(hidden: int = HIDDEN):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 10))


def batches(x, y, size: int = BATCH) -> Iterator[tuple[Any, Any]]:
    """(inputs, labels) tensors in order: TRAK's ``num_samples=`` counts rows sequentially."""
    import torch

    for i in range(0, len(y), size):
        yield torch.from_numpy(x[i:i + size]), torch.from_numpy(y[i:i + size])


def train(path: str | Path, seed: int, epochs: int, hidden: int = HIDDEN,
          n_train: int = N_TRAIN, n_val: int = N_VAL, lr: float = 0.05) -> dict[str, float]:
    """Train one MLP on the train split (SGD with momentum, minibatches of 32 shuffled by
    ``seed``), save its state_dict to ``path``; return its train and val accuracy."""
    import torch

    torch.manual_seed(seed)
    data = load_data(n_train, n_val)
    model = make_model(hidden)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(32):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(model.state_dict(), path)
    with torch.no_grad():
        acc = {s: float((model(torch.from_numpy(data[f"x_{s}"])).argmax(1)
                         == torch.from_numpy(data[f"y_{s}"])).float().mean())
               for s in ("train", "val")}
    return {"train_acc": acc["train"], "val_acc": acc["val"]}


def traker(save_dir: str | Path, hidden: int = HIDDEN, n_train: int = N_TRAIN,
           proj_dim: int = PROJ_DIM):
    """A TRAKer for this model and train set on the CPU, in float32 (float16 matmuls on a
    CPU are slow and imprecise).

    The projector is trak's BasicProjector (plain torch; the default CudaProjector needs the
    ``fast_jl`` CUDA extension), given explicitly with two blocks: with a single block
    (proj_dim <= block_size, 100 by default) traker 0.3.2's ``finalize_features`` frees the
    projection matrix and the ``score`` calls after it fail with ``AttributeError:
    'BasicProjector' object has no attribute 'proj_matrix'``; with several blocks each one
    is regenerated from its seed on every call (same seeds, same matrix).
    """
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType

    model = make_model(hidden)
    n_params = sum(p.numel() for p in model.parameters())
    projector = BasicProjector(grad_dim=n_params, proj_dim=proj_dim, seed=0,
                               proj_type=ProjectionType.normal, device="cpu",
                               block_size=max(1, proj_dim // 2))
    return TRAKer(model=model, task="image_classification", train_set_size=n_train,
                  save_dir=str(save_dir), device="cpu", projector=projector,
                  use_half_precision=False)


@contextlib.contextmanager
def save_dir_lock(save_dir: str | Path) -> Iterator[None]:
    """An exclusive lock (flock) on ``save_dir/.shared.lock`` for TRAK's shared files.

    traker writes its JSON files in place (open "w", then dump), and every TRAKer reads all of
    them when it is created (metadata.json, every id_*.json, experiments.json): two
    checkpoints featurized at the same time can read a file the other is halfway through
    writing (``json.decoder.JSONDecodeError``; 1 in 8 runs of two concurrent processes in a
    fresh save_dir). Holding this lock wherever a process reads another's JSON or writes one
    another reads makes concurrent checkpoints safe on one machine (and on a shared file
    system where flock works across nodes).
    """
    import fcntl

    folder = Path(save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def featurize_and_score(ckpt_path: str | Path, model_id: int, save_dir: str | Path,
                        exp_name: str = EXP_NAME, hidden: int = HIDDEN,
                        n_train: int = N_TRAIN, n_val: int = N_VAL,
                        proj_dim: int = PROJ_DIM) -> dict[str, Any]:
    """One checkpoint, as in TRAK's Slurm tutorial: featurize the train set, finalize the
    features, compute the target (val) gradients. Writes ``save_dir/<model_id>/`` and
    ``save_dir/id_<model_id>.json``; creates or updates the shared metadata.json,
    experiments.json and ``scores/<exp_name>.mmap`` (under :func:`save_dir_lock`).

    Raises StaleStateError when ``save_dir`` already holds ``model_id``: TRAK would skip
    featurizing it ("already finalized, skipping") and score with the old features.
    """
    import torch

    data = load_data(n_train, n_val)
    ckpt = torch.load(ckpt_path, weights_only=True)
    with save_dir_lock(save_dir):  # reads every id_*.json, experiments.json, metadata.json
        trk = traker(save_dir, hidden, n_train, proj_dim)
        old = trk.saver.model_ids.get(model_id)
        if old is not None:
            raise StaleStateError(
                f"{save_dir} already holds model_id {model_id} ({old}): TRAK would not "
                f"featurize it again. Remove {Path(save_dir) / str(model_id)} and "
                f"{Path(save_dir) / f'id_{model_id}.json'} first (shoal does: they are "
                "the featurize step's outputs=)")
        trk.load_checkpoint(ckpt, model_id=model_id)  # registers it: writes id_<id>.json
    train_batches = list(batches(data["x_train"], data["y_train"]))
    for i, (xb, yb) in enumerate(train_batches):
        # the call that completes the train set rewrites id_<id>.json (is_featurized: 1)
        last = i == len(train_batches) - 1
        with save_dir_lock(save_dir) if last else contextlib.nullcontext():
            trk.featurize(batch=(xb, yb), num_samples=len(yb))
    with save_dir_lock(save_dir):  # id_<id>.json; read-modify-write of experiments.json
        trk.finalize_features(model_ids=[model_id])
        trk.start_scoring_checkpoint(exp_name=exp_name, checkpoint=ckpt, model_id=model_id,
                                     num_targets=n_val)
    for xb, yb in batches(data["x_val"], data["y_val"]):
        trk.score(batch=(xb, yb), num_samples=len(yb))
    state = json.loads((Path(save_dir) / f"id_{model_id}.json").read_text())[str(model_id)]
    return {"is_featurized": state["is_featurized"], "is_finalized": state["is_finalized"]}


def finalize_scores(save_dir: str | Path, model_ids: Sequence[int], exp_name: str = EXP_NAME,
                    hidden: int = HIDDEN, n_train: int = N_TRAIN, proj_dim: int = PROJ_DIM):
    """The gather: TRAK scores over the given checkpoints, an (n_train, n_val) array."""
    import numpy as np

    with save_dir_lock(save_dir):
        trk = traker(save_dir, hidden, n_train, proj_dim)
        return np.array(trk.finalize_scores(exp_name=exp_name, model_ids=list(model_ids)))


def summarize(scores, n_train: int = N_TRAIN, n_val: int = N_VAL) -> dict[str, float]:
    """Sanity checks of the attributions: how often the train example with the highest score
    for a val example has the val example's label (chance: about 0.1), and the scale."""
    import numpy as np

    data = load_data(n_train, n_val)
    scores = np.asarray(scores)
    same = data["y_train"][scores.argmax(axis=0)] == data["y_val"]
    return {"top1_same_label": float(same.mean()), "mean_score": float(scores.mean()),
            "max_abs_score": float(np.abs(scores).max())}
