"""One task per job store that writes whatever was sent since its last batch in one go (a
SQLite transaction, a Redis pipeline), so that a burst of submits costs one commit, not one
each. ``send`` is for writes nobody waits on (a status change); ``send_and_wait`` returns once
the batch that holds the write is written (an accepted request, an answer, a read that must
come after the writes sent before it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from minifal.fleet.job_store.base import StoreUnavailable

logger = logging.getLogger("minifal.fleet")

Operation = tuple[Any, ...]
"""A store's write: its kind first (``("complete", request_id, ...)``), then its arguments."""
WriteBatch = Callable[[list[Operation]], Awaitable[list[Any]]]
"""Writes a batch; one result per operation, an exception in place of one that failed. Raises
``StoreUnavailable`` when the whole batch failed."""


class BatchedWriter:
    def __init__(self, write_batch: WriteBatch, name: str = "job-store-writer") -> None:
        self._write_batch = write_batch
        self._name = name
        self._pending: list[tuple[Operation, asyncio.Future[Any] | None]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._closing

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._write_forever(), name=self._name)

    async def close(self) -> None:
        """Write what was sent, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def send(self, operation: Operation) -> None:
        if not self.running:
            logger.warning("queue store closed: %s of %s not written", *operation[:2])
            return
        self._pending.append((operation, None))
        self._wake.set()

    async def send_and_wait(self, operation: Operation) -> Any:
        if not self.running:
            raise StoreUnavailable("the queue store is closed")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, done))
        self._wake.set()
        return await asyncio.shield(done)

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                if self._closing:
                    return
                continue
            try:
                results = await self._write_batch([operation for operation, _ in batch])
            except StoreUnavailable as exc:
                logger.error("queue store: a batch of %d write(s) failed: %s", len(batch), exc)
                for _, done in batch:
                    if done is not None and not done.done():
                        done.set_exception(exc)
                continue
            for (operation, done), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    if done is None:
                        logger.error("queue store: %s of %s: %s", *operation[:2], result)
                    elif not done.done():
                        done.set_exception(result)
                elif done is not None and not done.done():
                    done.set_result(result)
            if self._closing and not self._pending:
                return
