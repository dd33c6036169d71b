"""Which GPUs each runner gets: fal gives a runner ``num_gpus`` GPUs of its own.

With more runners than GPUs allow, runners share GPUs round-robin (the least used first) and the
caller logs that they do. Where several apps share the machine's GPUs, the shared pool's
arbiter (``shared_gpu_pool.py``, ``gpu_arbiter.py``) chooses them instead and this only counts.
"""

from __future__ import annotations

import os
from collections import Counter

from minifal.host.nvidia_smi import list_gpus


class GpuPool:
    def __init__(self, gpus: list[str], per_runner: int) -> None:
        self.gpus = list(gpus)
        self.per_runner = per_runner if gpus else 0
        self.users: Counter[str] = Counter({gpu: 0 for gpu in self.gpus})

    def acquire(self, granted: list[str] | None = None) -> tuple[list[str], bool]:
        """GPUs for a new runner, and whether any of them is already used by another runner.
        ``granted``: those a shared pool chose, which holds one runner per GPU at a time (its
        suspended runners hold no GPU memory)."""
        if granted is not None:
            chosen, shared = list(granted), False
        elif self.per_runner == 0:
            return [], False
        else:
            # Least used first; ties keep the order the user gave (--gpus 0,1,...).
            ranked = sorted(self.gpus, key=lambda gpu: (self.users[gpu], self.gpus.index(gpu)))
            chosen = ranked[: self.per_runner]
            shared = any(self.users[gpu] > 0 for gpu in chosen)
        for gpu in chosen:
            self.users[gpu] += 1
        return chosen, shared

    def release(self, gpus: list[str]) -> None:
        for gpu in gpus:
            if self.users[gpu] > 0:
                self.users[gpu] -= 1


def detect_gpus() -> list[str]:
    """GPU indices visible to this process: ``CUDA_VISIBLE_DEVICES``, else all ``nvidia-smi``
    lists (without importing torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    return [gpu.index for gpu in list_gpus()]
