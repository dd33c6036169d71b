"""Which GPUs each runner gets: fal gives a runner ``num_gpus`` GPUs of its own.

With more runners than GPUs allow, runners share GPUs round-robin (the least used first) and the
caller logs that they do. Several apps behind one gateway (``minifal run A B``) draw from one
pool: each app's supervisor holds an ``AppGpus``, the one place where an app asks for GPUs;
where a shared pool's arbiter (``shared_gpu_pool.py``, ``gpu_arbiter.py``) chooses the GPUs, this
only counts them.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from minifal.host.nvidia_smi import list_gpus


class GpuPool:
    def __init__(self, gpus: list[str], per_runner: int) -> None:
        self.gpus = list(gpus)
        self.per_runner = per_runner if gpus else 0
        self.users: Counter[str] = Counter({gpu: 0 for gpu in self.gpus})

    def acquire(
        self, granted: list[str] | None = None, per_runner: int | None = None
    ) -> tuple[list[str], bool]:
        """GPUs for a new runner (``per_runner`` of them, default the pool's), and whether any
        of them is already used by another runner. ``granted``: those a shared pool chose,
        which holds one runner per GPU at a time (its suspended runners hold no GPU memory)."""
        if granted is not None:
            chosen, shared = list(granted), False
        else:
            count = self.per_runner if per_runner is None else per_runner
            if count == 0 or not self.gpus:
                return [], False
            # Least used first; ties keep the order the user gave (--gpus 0,1,...).
            ranked = sorted(self.gpus, key=lambda gpu: (self.users[gpu], self.gpus.index(gpu)))
            chosen = ranked[:count]
            shared = any(self.users[gpu] > 0 for gpu in chosen)
        for gpu in chosen:
            self.users[gpu] += 1
        return chosen, shared

    def release(self, gpus: list[str]) -> None:
        for gpu in gpus:
            if self.users[gpu] > 0:
                self.users[gpu] -= 1


class GpuSource(Protocol):
    """What a supervisor asks for its runners' GPUs (a ``GpuPool`` or an app's share of one),
    and what a rollout reads of it (``deployer``): the GPUs, and how many a runner takes."""

    @property
    def gpus(self) -> list[str]: ...

    @property
    def per_runner(self) -> int: ...

    def acquire(self, granted: list[str] | None = None) -> tuple[list[str], bool]: ...

    def release(self, gpus: list[str]) -> None: ...


@dataclass(frozen=True)
class AppGpus:
    """One app's share of a pool that several apps draw from: its runners take ``per_runner``
    GPUs each (0: the app runs on CPU) from ``pool``, and give them back there."""

    pool: GpuPool
    per_runner: int

    @property
    def gpus(self) -> list[str]:
        return self.pool.gpus

    def acquire(self, granted: list[str] | None = None) -> tuple[list[str], bool]:
        return self.pool.acquire(granted, self.per_runner)

    def release(self, gpus: list[str]) -> None:
        self.pool.release(gpus)


def detect_gpus() -> list[str]:
    """GPU indices visible to this process: ``CUDA_VISIBLE_DEVICES``, else all ``nvidia-smi``
    lists (without importing torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    return [gpu.index for gpu in list_gpus()]
