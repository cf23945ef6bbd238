"""Does the setting ``shoal tune`` recommends beat the default on the streamflow grid?

In one run: the streamflow example's ``prep`` (so ``train`` has its inputs), ``shoal tune
examples/streamflow train`` (its table and recommendation printed), then the whole ``train``
step twice from empty task folders — at the default (``cpus=1``, ``-j`` all cores) and at
the recommended ``cpus=`` and ``-j`` — each timed; both walls and their ratio are printed.
Run by hand; it never asserts::

    python benchmarks/tune_streamflow.py                   # the example's default size
    python benchmarks/tune_streamflow.py --config sites=6 seeds=4
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXP = Path(__file__).resolve().parent.parent / "examples" / "streamflow"


def shoal(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("shoal")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "shoal.cli.main"]
    res = subprocess.run([*cmd, *args, "--root", str(root)], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise SystemExit(f"shoal {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res


def timed_train(root: Path, config: list[str], cpus: int, jobs: int) -> float:
    shutil.rmtree(root / "train", ignore_errors=True)
    shutil.rmtree(root / "evaluate", ignore_errors=True)
    t0 = time.perf_counter()
    shoal("run", str(EXP), "--config", *config, f"train_cpus={cpus}", "-j", str(jobs),
          "--progress", "none", root=root)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", nargs="+", default=[], help="the example's config values")
    p.add_argument("--repeats", type=int, default=2, help="shoal tune's repeats (2)")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="shoal-tune-") as tmp:
        root = Path(tmp) / "runs"
        config = args.config or ["epochs=80"]
        shoal("run", str(EXP), "--config", *config, "--progress", "none", root=root)
        tuned = shoal("tune", str(EXP), "train", "--config", *config, "--repeats",
                      str(args.repeats), root=root).stdout
        print(tuned.rstrip())
        m = re.search(r"recommend: cpus=(\d+) on step 'train' and -j (\d+)", tuned)
        if m is None:
            raise SystemExit("no recommendation in shoal tune's output")
        cpus, jobs = int(m.group(1)), int(m.group(2))
        default = timed_train(root, config, 1, cores)
        chosen = timed_train(root, config, cpus, jobs)
    print(f"train + evaluate, default (cpus=1, -j {cores}): {default:.1f} s")
    print(f"train + evaluate, tuned (cpus={cpus}, -j {jobs}):   {chosen:.1f} s")
    print(f"ratio tuned / default: {chosen / default:.2f}"
          + ("  (the same setting: nothing to gain on this machine)"
             if (cpus, jobs) == (1, cores) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
