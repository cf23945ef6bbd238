"""Many streamflow LSTMs of one site trained at once, as one stacked model (shoal packs).

:func:`train_packed` is :func:`model.train_model` for K (factor, seed) pairs at once: each
replica starts from the weights ``train_model`` would build under its seed, sees the
mini-batches in the order its seed gives, has its own loss factor, its own gradient clipping
and (elementwise) its own Adam state. In float64 each replica ends where its independent
training ends (``tests/test_torch_packs.py``); in float32 they agree to rounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from model import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_HIDDEN,
    DEFAULT_LR,
    StreamLSTM,
    set_threads,
)

from shoal.torch import StackedLinear, StackedLSTM, clip_grad_norm_, per_replica, replicas


def train_packed(
    arrays: dict[str, np.ndarray],
    factors: Sequence[float],
    seeds: Sequence[int],
    epochs: int = DEFAULT_EPOCHS,
    hidden: int = DEFAULT_HIDDEN,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = 1,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    log: Callable[[str], Any] | None = None,
    log_every: int = 10,
    clip: float | None = 1.0,
    dtype: torch.dtype = torch.float32,
    lstm_mode: str = "auto",
) -> tuple[list[StreamLSTM], list[list[dict[str, Any]]]]:
    """Train ``len(seeds)`` models (replica k: ``factors[k]``, ``seeds[k]``) on one site's
    arrays; returns the models and their histories, as ``train_model`` does for one.
    ``lstm_mode``: how :class:`shoal.torch.StackedLSTM` runs (``auto``, ``steps``,
    ``replicas``)."""
    set_threads(threads)
    k = len(seeds)
    x = torch.from_numpy(np.asarray(arrays["x_train"], dtype=np.float32)).to(device, dtype)
    y = torch.from_numpy(np.asarray(arrays["y_train"], dtype=np.float32)).to(device, dtype)
    warmup = int(arrays["warmup"])
    models = replicas(lambda: StreamLSTM(x.shape[-1], hidden), seeds)
    models = [m.to(device, dtype) for m in models]
    lstm = StackedLSTM.from_modules([m.lstm for m in models], mode=lstm_mode)
    head = StackedLinear.from_modules([m.head for m in models])
    params = [*lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    factor = per_replica(factors, like=x)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    histories: list[list[dict[str, Any]]] = [[] for _ in range(k)]
    start = time.perf_counter()
    stopped = False
    n = len(x)
    for epoch in range(epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        sums = torch.zeros(3, k, dtype=torch.float64)
        n_batches = 0
        for i in range(0, n, batch_size):
            idx = orders[:, i : i + batch_size]  # [K, b]: each replica's own batch
            pred = head(lstm(x[idx])[0])
            diff = (pred[:, :, warmup:] - y[idx][:, :, warmup:]) ** 2
            loss_flow = diff[..., 0].mean(dim=(1, 2))
            loss_temp = diff[..., 1].mean(dim=(1, 2))
            loss = loss_flow + factor * loss_temp  # [K]
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # replica k's gradient is that of its own loss
            if clip is not None:
                clip_grad_norm_(params, clip)
            opt.step()
            sums += torch.stack([loss, loss_flow, loss_temp]).detach().double().cpu()
            n_batches += 1
            if should_stop is not None and should_stop():
                stopped = True
                break
        seconds = time.perf_counter() - start
        for r in range(k):
            histories[r].append({
                "epoch": epoch + 1, "loss": float(sums[0, r]) / n_batches,
                "loss_flow": float(sums[1, r]) / n_batches,
                "loss_temp": float(sums[2, r]) / n_batches,
                "seconds": seconds, "stopped": stopped,
            })
        last = stopped or epoch + 1 == epochs
        if log is not None and (last or (epoch + 1) % max(1, log_every) == 0):
            mean = float(sums[0].mean()) / n_batches
            log(f"epoch {epoch + 1}/{epochs}: {k} models, mean loss={mean:.4f}"
                + (" (stop requested)" if stopped else ""))
        if stopped:
            break
    for m, lstm_k, head_k in zip(models, lstm.unstack(), head.unstack()):
        m.lstm.load_state_dict(lstm_k.state_dict())
        m.head.load_state_dict(head_k.state_dict())
        m.eval()
    return models, histories
