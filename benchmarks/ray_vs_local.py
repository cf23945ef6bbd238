"""The Ray backend against the local backend on this machine, in one run.

Starts a local Ray cluster (``ray start --head --num-cpus J``), then times, for each backend,
from an empty run root: (a) 2,000 trivial function tasks; (b) the seed-001 DAG of trivial
tasks at 10 sites (``plan_scale.py``'s experiment: 8,111 tasks with the gather). Prints both
walls, the ratio (goal: Ray within 3x of local) and Ray's extra cost per task. Run by hand;
it never asserts::

    python benchmarks/ray_vs_local.py            # -j 2
    python benchmarks/ray_vs_local.py --sites 3  # a quick check
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_scale import find_shoal, write_experiment

TRIVIAL = """
import shoal
exp = shoal.Experiment("trivial", grid=shoal.Grid(i=range({n})))

@exp.step(per=["i"])
def t(ctx, i):
    return {{"i": i}}
"""


def timed(cmd: list[str], path: Path, root: Path, jobs: int, extra: list[str]) -> float:
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, "run", str(path), "--root", str(root), "-j", str(jobs),
                          "--progress", "none", *extra], capture_output=True, text=True,
                         check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"shoal run failed:\n{res.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("-j", "--jobs", type=int, default=2, help="CPUs for both backends (2)")
    p.add_argument("--n", type=int, default=2000, help="trivial tasks (2000)")
    p.add_argument("--sites", type=int, default=10, help="seed-001 sites (10: 8,111 tasks)")
    p.add_argument("--shoal", metavar="PATH", help="the shoal executable")
    args = p.parse_args(argv)
    cmd = find_shoal(args.shoal)
    if cmd is None:
        raise SystemExit("no shoal executable found (pass --shoal PATH)")
    ray_bin = Path(sys.executable).with_name("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([str(ray_bin), "start", "--head", f"--num-cpus={args.jobs}",
                    f"--port={port}", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True)
    address = f"127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory(prefix="shoal-ray-") as tmp:
            work = Path(tmp)
            trivial = work / "trivial.py"
            trivial.write_text(TRIVIAL.format(n=args.n))
            dag = write_experiment(work / "dag", args.sites, 30)
            n_dag = args.sites + 3 * args.sites * 9 * 30 + 1
            print(f"ray_vs_local: -j {args.jobs}, Ray cluster at {address}")
            for label, path, n in ((f"{args.n:,} trivial tasks", trivial, args.n),
                                   (f"seed-001 DAG, {n_dag:,} tasks", dag, n_dag)):
                local = timed(cmd, path, work / "r-local", args.jobs, [])
                ray = timed(cmd, path, work / "r-ray", args.jobs,
                            ["--backend", "ray", "--address", address])
                print(f"  {label}: local {local:.2f} s ({n / local:,.0f}/s), ray {ray:.2f} s "
                      f"({n / ray:,.0f}/s), ratio ray/local {ray / local:.2f} (goal <= 3), "
                      f"ray's extra cost {(ray - local) / n * 1e3:.2f} ms per task")
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
