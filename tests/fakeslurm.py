"""A Slurm double for unit tests: ``sbatch``, ``squeue``, ``sacct``, ``scancel`` and
``scontrol`` answered from a table of jobs whose states a test sets (in the manner of
submitit's MockedSubprocess). An array element submitted runs at once — its batch script
under ``bash``, with Slurm's variables — unless the test's ``decide`` hook gives it a state
instead (``"PENDING"`` to keep it queued, ``"OUT_OF_MEMORY"``, ``"PREEMPTED"``... to end it
without running). Real-Slurm integration tests stay beside these (tests/test_slurm*.py).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.backends.slurm import commands

Decide = Callable[["FakeSlurm", str, int, str], "str | None"]


@dataclass
class FakeSlurm:
    decide: Decide | None = None  # (fake, job, index, script text) -> a state, or None: run
    next_id: int = 100
    scripts: dict[str, str] = field(default_factory=dict)  # job -> its batch script
    states: dict[tuple[str, int], str] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    @property
    def sbatch_calls(self) -> int:
        return sum(1 for c in self.calls if c[0] == "sbatch")

    def install(self, monkeypatch: Any) -> FakeSlurm:
        monkeypatch.setattr(commands, "run", self.run)
        monkeypatch.setattr(commands, "available", lambda: True)
        monkeypatch.setattr(commands, "_config_cache", None)
        monkeypatch.setattr(commands, "_partition_cache", {})
        return self

    def execute(self, job: str, index: int) -> None:
        """Run element ``index`` of ``job`` as Slurm would, and mark it COMPLETED/FAILED."""
        text = self.scripts[job]
        output = re.search(r"^#SBATCH --output=(.*)$", text, re.M)
        log = (output.group(1) if output else os.devnull).replace("%A", job).replace(
            "%a", str(index))
        env = {**os.environ, "SLURM_ARRAY_JOB_ID": job, "SLURM_ARRAY_TASK_ID": str(index),
               "SLURM_JOB_ID": f"{job}{index}"}
        with open(log, "a") as fh:
            res = subprocess.run(["bash", "-c", text], env=env, stdout=fh, stderr=fh,
                                 stdin=subprocess.DEVNULL, timeout=300, check=False)
        self.states[(job, index)] = "COMPLETED" if res.returncode == 0 else "FAILED"

    def run_pending(self) -> None:
        """Every queued element starts now (and ends)."""
        for (job, index), state in list(self.states.items()):
            if state == "PENDING":
                self.execute(job, index)

    # ------------------------------------------------------------------ the commands
    def run(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        out = getattr(self, f"_{argv[0]}")(argv[1:])
        return subprocess.CompletedProcess(argv, 0, out, "")

    def _sbatch(self, args: list[str]) -> str:
        path = args[-1]
        with open(path) as fh:
            text = fh.read()
        array = re.search(r"^#SBATCH --array=0-(\d+)", text, re.M)
        size = int(array.group(1)) + 1 if array else 1
        job = str(self.next_id)
        self.next_id += 1
        self.scripts[job] = text
        for index in range(size):
            state = self.decide(self, job, index, text) if self.decide else None
            if state is None:
                self.execute(job, index)
            else:
                self.states[(job, index)] = state
        return f"{job}\n"

    def _squeue(self, args: list[str]) -> str:
        jobs = set(args[args.index("-j") + 1].split(","))
        return "".join(f"{job}|{index}|{state}\n" for (job, index), state in
                       self.states.items() if job in jobs)

    def _sacct(self, args: list[str]) -> str:
        jobs = set(args[args.index("-j") + 1].split(","))
        return "".join(f"{job}_{index}|{state}\n" for (job, index), state in
                       self.states.items() if job in jobs)

    def _scancel(self, args: list[str]) -> str:
        if any(a.startswith("--signal") for a in args):
            return ""  # (a signal: the element would checkpoint; nothing ends here)
        for target in (a for a in args if not a.startswith("--")):
            job, _, index = target.partition("_")
            for key in self.states:
                if key[0] == job and (not index or key[1] == int(index)):
                    self.states[key] = "CANCELLED"
        return ""

    def _scontrol(self, args: list[str]) -> str:
        if args[:2] == ["show", "config"]:
            return "MaxArraySize = 1001\nJobCompType = jobcomp/none\n"
        return "PartitionName=fake Default=YES MaxTime=UNLIMITED State=UP\n"
