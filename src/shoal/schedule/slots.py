"""Resource slots of one machine: CPU cores, GPU devices (fractions allowed), memory."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field

from shoal.errors import ShoalError
from shoal.spec.resources import Resources


def detect_cpus() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def detect_gpus() -> list[str]:
    """GPU devices as CUDA_VISIBLE_DEVICES names them: ``$CUDA_VISIBLE_DEVICES`` when set
    (indices or UUIDs, kept as they are), else ``nvidia-smi -L``'s indices, else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return parse_gpu_list(env, "CUDA_VISIBLE_DEVICES")
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    import subprocess

    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, re.MULTILINE)]


_DEVICE = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z/-]+)$")


def parse_gpu_list(text: str, source: str = "--gpus") -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; ``""``/``"none"`` -> ``[]``. Devices are named as
    CUDA_VISIBLE_DEVICES names them, indices or UUIDs (``GPU-…``, ``MIG-…``), and handed to
    tasks by those names (a UUID is never turned into an index: index 0 is another device
    than the first of an allocation given by UUIDs). ``source`` names the text in errors."""
    text = text.strip()
    if not text or text.lower() in ("none", "-1"):
        return []
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [k for k, t in enumerate(items) if not _DEVICE.match(t)]
    if bad and source == "CUDA_VISIBLE_DEVICES":  # (CUDA's rule: the devices before the
        items = items[:bad[0]]  # first invalid entry; "NoDevFiles" from Slurm: none)
    elif bad:
        raise ShoalError(f"{source}={text!r}: {items[bad[0]]!r} is not a GPU; give device "
                         "indices or UUIDs as CUDA_VISIBLE_DEVICES takes them, e.g. --gpus "
                         "0,1 (or --gpus none)")
    return list(dict.fromkeys(items))


def detect_mem_mb() -> int | None:
    """This machine's memory in MiB (MemTotal), or None when unknown.

    Tasks' ``mem=`` are reservations against it, never more than the machine has.
    """
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


@dataclass
class Slots:
    """Free capacity; ``take``/``give`` as tasks start and end."""

    cpus: int
    mem_mb: int | None = None
    gpus: dict[str, float] = field(default_factory=dict)  # device -> free fraction
    unlimited: bool = False  # a cluster: its scheduler does the placing

    @classmethod
    def cluster(cls) -> Slots:
        """No local limits: every ready task can be handed to the cluster's scheduler."""
        return cls(cpus=10**9, unlimited=True)

    @classmethod
    def local(cls, cpus: int, gpus: list[str], mem_mb: int | None) -> Slots:
        return cls(cpus=cpus, mem_mb=mem_mb, gpus={g: 1.0 for g in gpus})

    def place(self, res: Resources, cpus: int) -> list[str] | None:
        """Devices for a task needing ``res`` (with ``cpus`` after clamping), or None."""
        if self.unlimited:
            return []
        if cpus > self.cpus:
            return None
        if res.mem_mb and self.mem_mb is not None and res.mem_mb > self.mem_mb:
            return None
        if res.gpus <= 0:
            return []
        if res.gpus < 1:
            fits = [(free, d) for d, free in self.gpus.items() if free + 1e-9 >= res.gpus]
            if not fits:
                return None
            return [min(fits)[1]]  # best fit: pack fractions onto the fullest device
        whole = [d for d, free in self.gpus.items() if free >= 1.0 - 1e-9]
        n = int(res.gpus)
        return whole[:n] if len(whole) >= n else None

    def take(self, res: Resources, cpus: int, devices: list[str]) -> None:
        if self.unlimited:
            return
        self.cpus -= cpus
        if res.mem_mb and self.mem_mb is not None:
            self.mem_mb -= res.mem_mb
        share = res.gpus if res.gpus < 1 else 1.0
        for d in devices:
            self.gpus[d] -= share

    def give(self, res: Resources, cpus: int, devices: list[str]) -> None:
        if self.unlimited:
            return
        self.cpus += cpus
        if res.mem_mb and self.mem_mb is not None:
            self.mem_mb += res.mem_mb
        share = res.gpus if res.gpus < 1 else 1.0
        for d in devices:
            self.gpus[d] = min(1.0, self.gpus[d] + share)
