"""The pure rules of dynamic batching (``batching.py``): when a batch starts, how a batch
function's results map to its callers, and what the batcher counts. No threads, no clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

IDLE_WAIT_S = 1.0  # a worker with nothing to do looks at its state this often


@dataclass(frozen=True)
class BatchRules:
    max_batch_size: int
    batch_timeout_s: float

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_timeout_s < 0:
            raise ValueError(f"batch_timeout must be >= 0, got {self.batch_timeout_s}")


@dataclass(frozen=True)
class NextBatch:
    """Take ``take`` calls now, or (``take == 0``) look again in ``wait_s`` seconds at most."""

    take: int
    wait_s: float


def next_batch(
    waiting: int, oldest_waited_s: float, previous_batch: int, rules: BatchRules
) -> NextBatch:
    """What a free worker does with ``waiting`` calls, the oldest of which waited so long."""
    if waiting == 0:
        return NextBatch(0, IDLE_WAIT_S)
    if waiting >= rules.max_batch_size:
        return NextBatch(rules.max_batch_size, 0.0)
    if oldest_waited_s >= rules.batch_timeout_s or previous_batch <= 1:
        return NextBatch(waiting, 0.0)
    return NextBatch(0, rules.batch_timeout_s - oldest_waited_s)


class Failed:
    """An item's outcome that is an exception (kept apart from results that are exceptions
    only because the function returned them: those are raised too)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def outcomes(results: Any, count: int) -> list[Any]:
    """The batch function's return value as one outcome per item: a result or a Failed."""
    if not isinstance(results, Sequence) or isinstance(results, (str, bytes)):
        error = TypeError(f"a batch function must return a list, got {type(results).__name__}")
        return [Failed(error)] * count
    if len(results) != count:
        error = RuntimeError(f"a batch of {count} returned {len(results)} results")
        return [Failed(error)] * count
    return [Failed(r) if isinstance(r, BaseException) else r for r in results]


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    retried_alone: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def count(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def summary(self) -> str:
        mean = self.items / self.batches if self.batches else 0.0
        sizes = ", ".join(f"{size}: {n}" for size, n in sorted(self.sizes.items()))
        return f"{self.batches} batches, {self.items} calls, mean size {mean:.2f} ({sizes})"
