"""A long training that checkpoints every epoch (seed 003: "checkpoint your jobs in 24 hour
units ... a daisy chain of jobs").

Locally, Ctrl-C (or SIGTERM) stops it after the epoch in progress and `shoal run` again
resumes from the newest checkpoint. On Slurm, a task longer than the longest job allowed
(`--max-time 24h`, or the partition's MaxTime) runs as chained segments: each job gets SIGUSR2
`--signal-grace` before its end, the task saves and returns `shoal.Requeue`, and shoal
submits the next segment — no `--array=1-10%1` chain to write or size by hand.

    shoal run examples/long_training                         # 3 seeds x 2 widths, 200 epochs
    shoal run examples/long_training --config epochs=20000   # long enough to Ctrl-C
    shoal run examples/long_training --backend slurm --max-time 24h   # on a cluster
"""

from __future__ import annotations

import shoal

EPOCHS = shoal.config("epochs", 200)
SEEDS = shoal.config("seeds", 3)

exp = shoal.Experiment("long_training",
                       grid=shoal.Grid(width=[16, 64], seed=range(SEEDS)))


@exp.step(per=["width", "seed"], cpus=1, time=shoal.config("time", "30h"),
          version=f"epochs={EPOCHS}")
def train(ctx, width, seed):
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(1000 + seed)  # the data: same for every width
    x = torch.randn(512, 8, generator=gen)
    y = torch.sin(x @ torch.randn(8, 1, generator=gen)) + 0.1 * torch.randn(512, 1, generator=gen)
    model = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Tanh(),
                                torch.nn.Linear(width, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = 0
    state = ctx.checkpoint.load(reader=lambda p: torch.load(p, weights_only=False))
    if state is not None:  # the newest checkpoint of this task (same code, same params)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"]
        ctx.log.info("resuming from epoch %d", start)

    loss = torch.tensor(0.0)
    for epoch in range(start, EPOCHS):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        snapshot = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1}
        ctx.checkpoint.save(writer=lambda path, s=snapshot: torch.save(s, path))
        if ctx.should_stop():  # Ctrl-C, preemption, or the end of this segment's job
            ctx.log.info("stopping after epoch %d", epoch + 1)
            return shoal.Requeue
    torch.save(model.state_dict(), ctx.out / "model.pt")
    return {"loss": loss.item(), "epochs": EPOCHS, "resumed_from": start}


@exp.gather(per=["width"], over=train)
def by_width(ctx, runs):
    return {"mean_loss": float(runs.loss.mean()), "n": len(runs)}
