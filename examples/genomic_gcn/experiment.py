"""Genomic prediction with a graph convolutional network (seed 002: "Machine Learning
Parallelization of Genomic Prediction Models").

Flowering time of a few hundred Arabidopsis-like accessions is predicted from their
genotypes (0/1/2 at a few hundred markers) by a two-layer GCN over a kinship graph (each
accession linked to its nearest relatives), in plain torch. The data are synthetic, with
population structure and a heritable trait, so the example runs anywhere in seconds.

The seed's team tried DataParallel (a device error), DDP over Gloo ("connection refused" on a
fixed port) and NCCL (a hang), and timed OMP_NUM_THREADS=1..7 by hand. Here:

* ``threads`` trains the GCN once per ``n_threads`` x ``seed``: ``cpus="{n_threads}"`` gives
  each task its threads (and its share of the machine), so the thread table is one step;
* ``ddp`` trains the same model as one DDP task of ``procs=2`` ranks over Gloo on CPU (NCCL
  on GPUs with ``--config backend=nccl gpus=2``): each rank takes half of the training
  accessions, DDP averages the gradients, so it follows the single-process run; shoal gives
  each task its own rendezvous port and kills it if its ranks hang (``hang_timeout=``);
* ``compare`` puts both side by side: test correlation and training time per setting.

    shoal run examples/genomic_gcn
    shoal results examples/genomic_gcn --step compare
    shoal run examples/genomic_gcn --config accessions=383 markers=2000 epochs=400
"""

from __future__ import annotations

import time

import shoal

ACCESSIONS = shoal.config("accessions", 200)
MARKERS = shoal.config("markers", 300)
EPOCHS = shoal.config("epochs", 60)
SEEDS = shoal.config("seeds", 2)
THREADS = shoal.config("threads", [1, 2])
BACKEND = shoal.config("backend", "gloo")
GPUS = shoal.config("gpus", 0)

exp = shoal.Experiment(
    "genomic_gcn",
    grid=shoal.Grid(n_threads=THREADS, seed=range(SEEDS)),
)


def simulate(n: int, m: int, seed: int = 7) -> dict:
    """Genotypes with population structure, a kinship graph, a heritable trait."""
    import numpy as np

    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 4, n)  # four subpopulations, each with its allele frequencies
    freqs = np.clip(rng.beta(2, 2, (4, m)) + rng.normal(0, 0.05, (4, m)), 0.05, 0.95)
    geno = rng.binomial(2, freqs[groups]).astype(np.float32)  # 0/1/2
    z = (geno - geno.mean(0)) / (geno.std(0) + 1e-6)
    kinship = z @ z.T / m
    k = 10  # each accession linked to its k closest relatives, both ways
    nearest = np.argsort(-kinship, axis=1)[:, 1:k + 1]
    adj = np.zeros((n, n), np.float32)
    adj[np.repeat(np.arange(n), k), nearest.ravel()] = 1.0
    adj = np.maximum(adj, adj.T) + np.eye(n, dtype=np.float32)
    d = 1.0 / np.sqrt(adj.sum(1))
    norm = adj * d[:, None] * d[None, :]  # D^-1/2 (A + I) D^-1/2
    effects = rng.normal(0, 1, m) * (rng.random(m) < 0.1)  # 10% causal markers
    genetic = z @ effects
    trait = genetic / genetic.std() + rng.normal(0, 1.0, n)  # heritability about 0.5
    days = 60 + 8 * trait.astype(np.float32)  # flowering time, days
    order = rng.permutation(n)
    test = np.zeros(n, bool)
    test[order[: n // 5]] = True
    return {"x": z.astype(np.float32), "adj": norm, "y": days, "test": test}


@exp.step(per=[])
def data(ctx):
    import numpy as np

    np.savez(ctx.out / "data.npz", **simulate(ACCESSIONS, MARKERS))
    return {"accessions": ACCESSIONS, "markers": MARKERS}


def gcn(m: int, hidden: int = 32):
    import torch

    class GCN(torch.nn.Module):
        """Two graph convolutions, a ReLU after the first: out = Â relu(Â X W1) W2."""

        def __init__(self) -> None:
            super().__init__()
            self.w1 = torch.nn.Linear(m, hidden)
            self.w2 = torch.nn.Linear(hidden, 1)

        def forward(self, x, adj):
            h = torch.relu(adj @ self.w1(x))
            return (adj @ self.w2(h)).squeeze(-1)

    return GCN()


def train_gcn(path, seed: int, rank: int = 0, world: int = 1, device: str = "cpu",
              wrap=None) -> dict:
    """Full-batch training; rank ``r`` of ``world`` takes every world-th training node."""
    import numpy as np
    import torch

    d = np.load(path)
    x, adj = torch.from_numpy(d["x"]).to(device), torch.from_numpy(d["adj"]).to(device)
    y, test = torch.from_numpy(d["y"]).to(device), torch.from_numpy(d["test"]).to(device)
    train_idx = torch.nonzero(~test).squeeze(-1)
    mine = train_idx[rank::world]
    mean, std = y[train_idx].mean(), y[train_idx].std()
    torch.manual_seed(seed)
    model = gcn(x.shape[1]).to(device)
    net = wrap(model) if wrap is not None else model
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x, adj)[mine], (y[mine] - mean) / std)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        pred = model(x, adj) * std + mean
        r = float(torch.corrcoef(torch.stack([pred[test], y[test]]))[0, 1])
        rmse = float(torch.sqrt(torch.mean((pred[test] - y[test]) ** 2)))
    return {"test_r": r, "test_rmse_days": rmse, "train_s": seconds,
            "final_loss": float(loss.detach())}


@exp.step(per=["n_threads", "seed"], needs=[data], cpus="{n_threads}")
def threads(ctx, n_threads, seed):
    """One process with n_threads threads (shoal sets torch's and OpenMP's)."""
    return train_gcn(ctx.input(data).out / "data.npz", seed)


@exp.step(per=["seed"], needs=[data], procs=2, cpus=1, gpus=GPUS, hang_timeout="2m")
def ddp(ctx, seed):
    """Two ranks, DistributedDataParallel: shoal sets RANK, WORLD_SIZE, MASTER_ADDR and a
    free MASTER_PORT for this task alone; env:// reads them."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group(BACKEND)
    device = "cuda:0" if BACKEND == "nccl" else "cpu"  # (each rank sees its own GPU)
    try:
        out = train_gcn(ctx.input(data).out / "data.npz", seed, ctx.rank, ctx.world_size,
                        device, wrap=lambda m: DDP(m, device_ids=[0] if BACKEND == "nccl"
                                                   else None))
        dist.barrier()  # (no rank tears the group down while another still uses it)
    finally:
        dist.destroy_process_group()
    return {**out, "ranks": ctx.world_size}


@exp.gather(per=[], over=[threads, ddp])
def compare(ctx, runs):
    """Per setting: mean test correlation and training time across seeds."""
    runs = runs.assign(setting=[f"ddp x{int(r)}" if s == "ddp" else f"{int(t)} thread(s)"
                                for s, t, r in zip(runs.step, runs.n_threads.fillna(0),
                                                   runs.get("ranks", 0).fillna(0))])
    table = runs.groupby("setting")[["test_r", "train_s"]].mean()
    out = {}
    for setting, row in table.iterrows():
        key = setting.replace(" ", "_").replace("(s)", "s")
        out[f"{key}_test_r"] = round(float(row.test_r), 4)
        out[f"{key}_train_s"] = round(float(row.train_s), 3)
    print(table.to_string())
    return out
