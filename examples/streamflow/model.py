"""Synthetic rivers and a small multi-task LSTM for the streamflow example.

Plain numpy/torch code with no dependency on shoal, so it can be used from the shoal
experiment (``experiment.py``), from a stand-alone script (``train.py``) or interactively.

The setting follows Sadler et al. (2022, https://doi.org/10.1029/2021WR030138): one LSTM
per river site predicts daily streamflow and, as an auxiliary task, water temperature;
the loss is ``mse(flow) + factor * mse(temp)`` on standardised targets. Real NWIS data
are replaced by a deterministic simulator so the example runs anywhere, offline:

* forcing: precipitation (wet/dry Markov chain, gamma amounts), air temperature
  (seasonal sine + AR(1) anomalies), solar radiation (seasonal, dimmed on wet days) and
  relative humidity;
* streamflow: a degree-day snow pack feeding a soil bucket (saturation-excess quick flow,
  temperature/radiation-driven evapotranspiration, percolation) and a linear groundwater
  reservoir, with multiplicative noise, in m³/s;
* water temperature: exponentially smoothed air temperature, damped towards a
  groundwater temperature at low flow and cooled by snow melt, plus noise, in °C.

Every site gets its own parameters, derived from a hash of its id.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: Names of the input (forcing) variables, in column order.
INPUTS: tuple[str, ...] = ("precip", "tair", "srad", "rhum")
#: Names of the target variables, in column order (the model's two outputs).
TARGETS: tuple[str, ...] = ("flow", "temp")

# Defaults sized so that one training takes about 2 s of one CPU core (see README.md).
DEFAULT_DAYS = 5475  # 15 years: 70 % for training, 30 % for validation
DEFAULT_SEQ_LEN = 120  # 60 days of spin-up + 60 scored days per sequence
DEFAULT_VAL_FRACTION = 0.3
DEFAULT_EPOCHS = 80
DEFAULT_HIDDEN = 16
DEFAULT_LR = 0.01
DEFAULT_BATCH_SIZE = 8


# --------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------


def site_rng(site: str, seed_base: int = 0) -> np.random.Generator:
    """A random generator that depends only on ``site`` and ``seed_base``.

    Uses a cryptographic hash rather than ``hash()`` so that it does not change between
    processes (Python salts string hashes per process).
    """
    digest = hashlib.sha256(f"{seed_base}:{site}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def site_parameters(site: str, seed_base: int = 0) -> dict[str, float]:
    """Physical parameters of a synthetic catchment, drawn deterministically per site."""
    rng = site_rng(site, seed_base)
    return {
        "area_km2": float(rng.uniform(50.0, 2000.0)),
        "tair_mean": float(rng.uniform(2.0, 16.0)),  # °C
        "tair_amp": float(rng.uniform(6.0, 14.0)),  # °C, half the annual range
        "wet_prob": float(rng.uniform(0.25, 0.45)),  # mean chance of a wet day
        "wet_persist": float(rng.uniform(0.2, 0.5)),  # extra chance a wet day follows a wet day
        "precip_mean": float(rng.uniform(5.0, 12.0)),  # mm on a wet day
        "precip_shape": float(rng.uniform(0.6, 0.9)),  # gamma shape (<1: skewed)
        "melt_rate": float(rng.uniform(2.0, 5.0)),  # mm / °C / day
        "soil_max": float(rng.uniform(80.0, 250.0)),  # mm
        "et_coef": float(rng.uniform(0.08, 0.16)),  # mm / (°C · MJ m⁻²) / day
        "perc_rate": float(rng.uniform(0.02, 0.08)),  # 1 / day
        "gw_rate": float(rng.uniform(0.01, 0.05)),  # 1 / day
        "quick_rate": float(rng.uniform(0.3, 0.7)),  # 1 / day, routing of quick flow
        "flow_noise": float(rng.uniform(0.05, 0.12)),  # log-scale sd
        "temp_smooth": float(rng.uniform(0.08, 0.25)),  # weight of today's air temperature
        "gw_temp": float(rng.uniform(6.0, 11.0)),  # °C
        "gw_weight_max": float(rng.uniform(0.2, 0.5)),  # groundwater damping at low flow
        "temp_noise": float(rng.uniform(0.3, 0.6)),  # °C
    }


def simulate(site: str, n_days: int = DEFAULT_DAYS, seed_base: int = 0) -> dict[str, np.ndarray]:
    """Simulate ``n_days`` of daily forcing and targets for one site.

    Deterministic: the same ``site``, ``n_days`` and ``seed_base`` give the same arrays.

    Returns a dict of float32 arrays of length ``n_days``: the inputs ``precip`` (mm/day),
    ``tair`` (°C), ``srad`` (MJ m⁻² day⁻¹) and ``rhum`` (%), the targets ``flow`` (m³/s)
    and ``temp`` (water temperature, °C), and ``doy`` (day of year, 0-based).
    """
    if n_days < 1:
        raise ValueError(f"n_days must be positive, got {n_days}")
    p = site_parameters(site, seed_base)
    rng = site_rng(site, seed_base + 1)
    days = np.arange(n_days)
    doy = days % 365
    season = np.sin(2.0 * np.pi * (doy - 105) / 365.0)  # peaks in mid July

    # Air temperature: seasonal cycle + AR(1) weather anomalies.
    anomaly = np.empty(n_days)
    a = 0.0
    for t in range(n_days):
        a = 0.75 * a + rng.normal(0.0, 2.0)
        anomaly[t] = a
    tair = p["tair_mean"] + p["tair_amp"] * season + anomaly

    # Precipitation: two-state Markov chain (wetter in winter), gamma amounts.
    p_wet_season = np.clip(p["wet_prob"] * (1.0 - 0.3 * season), 0.02, 0.95)
    wet = np.zeros(n_days, dtype=bool)
    u = rng.random(n_days)
    for t in range(n_days):
        chance = p_wet_season[t] + (p["wet_persist"] if t > 0 and wet[t - 1] else 0.0)
        wet[t] = u[t] < min(chance, 0.95)
    scale = p["precip_mean"] / p["precip_shape"]
    precip = np.where(wet, rng.gamma(p["precip_shape"], scale, n_days), 0.0)

    # Solar radiation: seasonal, dimmed on wet days; humidity: higher on wet, cool days.
    srad = (15.0 + 10.0 * season) * np.where(wet, rng.uniform(0.3, 0.7, n_days), 1.0)
    srad = np.clip(srad + rng.normal(0.0, 1.0, n_days), 0.5, None)
    rhum = 70.0 + 15.0 * wet - 0.6 * (tair - p["tair_mean"]) + rng.normal(0.0, 5.0, n_days)
    rhum = np.clip(rhum, 10.0, 100.0)

    # Streamflow: snow pack -> soil bucket -> quick + groundwater reservoirs.
    snow = quick_store = 0.0
    soil = 0.5 * p["soil_max"]
    gw = 20.0
    runoff = np.empty(n_days)  # mm/day
    melt_series = np.empty(n_days)
    for t in range(n_days):
        if tair[t] < 0.0:
            snow += precip[t]
            rain = 0.0
        else:
            rain = precip[t]
        melt = min(snow, p["melt_rate"] * max(tair[t], 0.0))
        snow -= melt
        melt_series[t] = melt
        soil += rain + melt
        excess = max(soil - p["soil_max"], 0.0)
        soil -= excess
        pet = p["et_coef"] * max(tair[t], 0.0) * srad[t] * (1.0 - 0.5 * rhum[t] / 100.0)
        soil -= min(soil, pet * soil / p["soil_max"])
        perc = p["perc_rate"] * soil * soil / p["soil_max"]
        soil -= perc
        gw += perc
        quick_store += excess
        quick = p["quick_rate"] * quick_store
        quick_store -= quick
        base = p["gw_rate"] * gw
        gw -= base
        runoff[t] = quick + base
    noise = np.exp(rng.normal(0.0, p["flow_noise"], n_days) - 0.5 * p["flow_noise"] ** 2)
    flow = runoff * noise * p["area_km2"] / 86.4  # mm/day over the catchment -> m³/s

    # Water temperature: smoothed air temperature, damped by groundwater at low flow.
    rel_flow = runoff / max(float(np.mean(runoff)), 1e-6)
    gw_weight = p["gw_weight_max"] / (1.0 + rel_flow)
    smooth = np.empty(n_days)
    s = float(tair[0])
    for t in range(n_days):
        s += p["temp_smooth"] * (tair[t] - s)
        smooth[t] = s
    temp = (1.0 - gw_weight) * np.maximum(smooth, 0.0) + gw_weight * p["gw_temp"]
    temp = temp - 0.3 * np.sqrt(melt_series)
    temp = np.maximum(temp + rng.normal(0.0, p["temp_noise"], n_days), 0.0)

    out = {
        "precip": precip,
        "tair": tair,
        "srad": srad,
        "rhum": rhum,
        "flow": flow,
        "temp": temp,
    }
    arrays = {k: v.astype(np.float32) for k, v in out.items()}
    arrays["doy"] = doy.astype(np.int32)
    return arrays


# --------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------


def _windows(x: np.ndarray, start: int, stop: int, seq_len: int, stride: int) -> np.ndarray:
    """Windows ``x[s : s + seq_len]`` for ``s = start, start + stride, ...`` inside ``stop``."""
    starts = range(start, stop - seq_len + 1, stride)
    return np.stack([x[s : s + seq_len] for s in starts]).astype(np.float32)


def prep_arrays(
    data: dict[str, np.ndarray],
    seq_len: int = DEFAULT_SEQ_LEN,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> dict[str, np.ndarray]:
    """Normalise a site's series and cut it into overlapping training/validation sequences.

    The series is split by time: the first ``1 - val_fraction`` of the days are for
    training, the rest for validation. Means and standard deviations come from the
    training part only. Sequences are ``seq_len`` days long and overlap by half: the first
    half of each sequence is a spin-up (the LSTM warms its state, no loss), the second
    half is scored, so every scored day appears in exactly one sequence. Validation
    sequences may start in the training period (inputs only) so that the first validation
    day has a full spin-up too.

    Returns a dict of arrays that ``np.savez`` can store directly:
    ``x_train``/``x_val`` (n, seq_len, len(INPUTS)), ``y_train``/``y_val``
    (n, seq_len, 2, normalised), ``x_mean``, ``x_std``, ``y_mean``, ``y_std``, and the
    scalars ``warmup`` (spin-up days per sequence) and ``val_start`` (index of the first
    validation day in the series).
    """
    if seq_len < 4 or seq_len % 2:
        raise ValueError(f"seq_len must be an even number >= 4, got {seq_len}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    x = np.stack([np.asarray(data[k], dtype=np.float64) for k in INPUTS], axis=-1)
    y = np.stack([np.asarray(data[k], dtype=np.float64) for k in TARGETS], axis=-1)
    n_days = len(x)
    split = round(n_days * (1.0 - val_fraction))
    warmup = seq_len // 2
    if split < seq_len or n_days - split < warmup:
        raise ValueError(
            f"{n_days} days with val_fraction={val_fraction} is too short for seq_len={seq_len}"
        )

    x_mean, x_std = x[:split].mean(axis=0), x[:split].std(axis=0) + 1e-6
    y_mean, y_std = y[:split].mean(axis=0), y[:split].std(axis=0) + 1e-6
    xn = (x - x_mean) / x_std
    yn = (y - y_mean) / y_std

    return {
        "x_train": _windows(xn, 0, split, seq_len, warmup),
        "y_train": _windows(yn, 0, split, seq_len, warmup),
        "x_val": _windows(xn, split - warmup, n_days, seq_len, warmup),
        "y_val": _windows(yn, split - warmup, n_days, seq_len, warmup),
        "x_mean": x_mean.astype(np.float32),
        "x_std": x_std.astype(np.float32),
        "y_mean": y_mean.astype(np.float32),
        "y_std": y_std.astype(np.float32),
        "warmup": np.array(warmup, dtype=np.int64),
        "val_start": np.array(split, dtype=np.int64),
    }


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read arrays written with ``np.savez(path, **prep_arrays(...))`` back into a dict."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (``None`` leaves the current setting alone)."""
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))


class StreamLSTM(nn.Module):
    """One LSTM layer and a linear head with two outputs per day: flow and temperature."""

    def __init__(self, n_inputs: int = len(INPUTS), hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.n_inputs = n_inputs
        self.hidden = hidden
        self.lstm = nn.LSTM(n_inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, len(TARGETS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (batch, time, n_inputs) to (batch, time, 2)."""
        h, _ = self.lstm(x)
        return self.head(h)


def _losses(pred: torch.Tensor, y: torch.Tensor, warmup: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE of flow and temperature over the scored (post spin-up) part of the sequences."""
    diff = (pred[:, warmup:] - y[:, warmup:]) ** 2
    return diff[..., 0].mean(), diff[..., 1].mean()


def train_model(
    arrays: dict[str, np.ndarray],
    factor: float,
    seed: int,
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
    on_epoch: Callable[[dict[str, Any]], Any] | None = None,
) -> tuple[StreamLSTM, list[dict[str, Any]]]:
    """Train a :class:`StreamLSTM` with loss ``mse(flow) + factor * mse(temp)``.

    ``seed`` seeds torch before the model is built, so it fixes the starting weights and
    the order of the mini-batches. ``threads`` sets torch's intra-op threads (``None``
    leaves the setting alone). ``should_stop`` is polled after every mini-batch; when it
    returns True, training ends there and the model trained so far is returned, with
    ``stopped`` True in the last history record. ``log``, if given, receives a line every
    ``log_every`` epochs and at the end. ``clip`` caps the global gradient norm (``None``:
    no clipping). ``dtype``: float32, or float64 for exact comparisons. ``on_epoch``
    receives each epoch's history record as it ends (e.g. to ``ctx.log`` it).

    Returns the model (in eval mode, on ``device``) and the history: one dict per epoch
    with ``epoch``, ``loss``, ``loss_flow``, ``loss_temp`` (means over the epoch's
    batches, normalised units), ``seconds`` (since the start) and ``stopped``.
    """
    set_threads(threads)
    torch.manual_seed(int(seed))
    gen = torch.Generator().manual_seed(int(seed))

    x = torch.from_numpy(np.asarray(arrays["x_train"], dtype=np.float32)).to(device, dtype)
    y = torch.from_numpy(np.asarray(arrays["y_train"], dtype=np.float32)).to(device, dtype)
    warmup = int(arrays["warmup"])
    model = StreamLSTM(x.shape[-1], hidden).to(device, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    factor = float(factor)

    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    stopped = False
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen).to(device)
        sums = [0.0, 0.0, 0.0]
        n_batches = 0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss_flow, loss_temp = _losses(model(x[idx]), y[idx], warmup)
            loss = loss_flow + factor * loss_temp
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sums[0] += loss.item()
            sums[1] += loss_flow.item()
            sums[2] += loss_temp.item()
            n_batches += 1
            if should_stop is not None and should_stop():
                stopped = True
                break
        record = {
            "epoch": epoch + 1,
            "loss": sums[0] / n_batches,
            "loss_flow": sums[1] / n_batches,
            "loss_temp": sums[2] / n_batches,
            "seconds": time.perf_counter() - start,
            "stopped": stopped,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        last = stopped or epoch + 1 == epochs
        if log is not None and (last or (epoch + 1) % max(1, log_every) == 0):
            log(
                f"epoch {epoch + 1}/{epochs} loss={record['loss']:.4f} "
                f"flow={record['loss_flow']:.4f} temp={record['loss_temp']:.4f}"
                + (" (stop requested)" if stopped else "")
            )
        if stopped:
            break
    model.eval()
    return model, history


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def predict(model: StreamLSTM, x: np.ndarray, warmup: int) -> np.ndarray:
    """Predictions (normalised) for the scored days of sequences ``x``, as (n_days, 2)."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device))
    return pred[:, warmup:].reshape(-1, pred.shape[-1]).cpu().numpy().astype(np.float64)


def rmse(obs: np.ndarray, sim: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(sim) - np.asarray(obs)) ** 2)))


def nse(obs: np.ndarray, sim: np.ndarray) -> float:
    """Nash–Sutcliffe efficiency: 1 is perfect, 0 is no better than the observed mean."""
    obs = np.asarray(obs, dtype=np.float64)
    denom = float(np.sum((obs - obs.mean()) ** 2))
    if denom == 0.0:
        return math.nan
    return float(1.0 - np.sum((np.asarray(sim) - obs) ** 2) / denom)


def scored_targets(arrays: dict[str, np.ndarray], part: str) -> np.ndarray:
    """Observed targets in physical units for the scored days of ``part`` ("train"/"val")."""
    warmup = int(arrays["warmup"])
    y = np.asarray(arrays[f"y_{part}"], dtype=np.float64)[:, warmup:]
    return y.reshape(-1, y.shape[-1]) * arrays["y_std"] + arrays["y_mean"]


def predictions(model: StreamLSTM, arrays: dict[str, np.ndarray], part: str) -> np.ndarray:
    """Model predictions in physical units for the scored days of ``part``."""
    pred = predict(model, arrays[f"x_{part}"], int(arrays["warmup"]))
    return pred * arrays["y_std"] + arrays["y_mean"]


def evaluate_model(model: StreamLSTM, arrays: dict[str, np.ndarray]) -> dict[str, float | int]:
    """RMSE and NSE of flow (m³/s) and water temperature (°C), on train and validation days.

    Returns plain floats under ``{part}_{metric}_{target}`` keys, e.g. ``val_rmse_flow``,
    ``val_nse_flow``, ``val_rmse_temp``, ``val_nse_temp``, ``train_rmse_flow``, …, and
    the number of scored days as ``n_train_days`` and ``n_val_days``.
    """
    metrics: dict[str, float | int] = {}
    for part in ("train", "val"):
        obs = scored_targets(arrays, part)
        sim = predictions(model, arrays, part)
        for j, name in enumerate(TARGETS):
            metrics[f"{part}_rmse_{name}"] = rmse(obs[:, j], sim[:, j])
            metrics[f"{part}_nse_{name}"] = nse(obs[:, j], sim[:, j])
        metrics[f"n_{part}_days"] = len(obs)
    return metrics


# --------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------


def save_model(model: StreamLSTM, path: str | Path) -> None:
    """Save the weights and the shape of ``model`` to ``path`` (written atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"n_inputs": model.n_inputs, "hidden": model.hidden, "state_dict": state}, tmp)
    tmp.replace(path)


def load_model(path: str | Path, device: str = "cpu") -> StreamLSTM:
    """Load a model saved by :func:`save_model`, in eval mode, on ``device``."""
    blob = torch.load(Path(path), map_location=device, weights_only=True)
    model = StreamLSTM(int(blob["n_inputs"]), int(blob["hidden"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


def write_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """Write a training history (as returned by :func:`train_model`) as CSV."""
    if not history:
        Path(path).write_text("")
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def save_predictions(
    model: StreamLSTM, arrays: dict[str, np.ndarray], path: str | Path, part: str = "val"
) -> None:
    """Write observed and predicted flow and temperature for the scored days as CSV.

    Columns: ``day`` (index in the simulated series), ``flow_obs``, ``flow_pred`` (m³/s),
    ``temp_obs``, ``temp_pred`` (°C).
    """
    obs = scored_targets(arrays, part)
    sim = predictions(model, arrays, part)
    first = int(arrays["val_start"]) if part == "val" else int(arrays["warmup"])
    day = np.arange(first, first + len(obs))
    table = np.column_stack([day, obs[:, 0], sim[:, 0], obs[:, 1], sim[:, 1]])
    np.savetxt(
        path,
        table,
        delimiter=",",
        header="day,flow_obs,flow_pred,temp_obs,temp_pred",
        comments="",
        fmt=["%d", "%.4f", "%.4f", "%.3f", "%.3f"],
    )
