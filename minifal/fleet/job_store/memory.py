"""No journal (``--queue-store memory``): the gateway's own memory is all there is.

The queue is today's in-memory one: requests live in the forwarder's table (the last 10,000
answered ones) and die with the gateway; queued requests still waiting when it stops are
answered 503, as there is nowhere to keep them. The baseline of ``benchmarks/queue_submit.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from minifal.fleet.job_store.base import StoredRequest, StoreSize
from minifal.runner.log_lines import LogEntry


class MemoryJobStore:
    durable = False
    shared = False

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def accept(self, request: StoredRequest) -> None:
        pass

    def started(self, request_id: str, attempts: int, runner_id: str, at: float) -> None:
        pass

    def requeued(self, request_id: str) -> None:
        pass

    async def complete(
        self,
        request_id: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        finished: float,
        logs: Sequence[LogEntry] = (),
    ) -> bool:
        return True  # one gateway, one answer: the forwarder's job completes once

    def webhook_done(self, request_id: str) -> None:
        pass

    async def get(self, request_id: str) -> StoredRequest | None:
        return None

    async def take_over(self) -> list[StoredRequest]:
        return []

    async def prune(self, now: float) -> int:
        return 0

    async def size(self) -> StoreSize:
        return StoreSize(0, 0)
