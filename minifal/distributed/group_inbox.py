"""What the worker group's owner thread hands the threads that wait on it.

A waiter (``wait_ready``, a call of ``DistributedRunner``) owns an ``Inbox`` on its event loop;
the owner thread (``worker_group.py``) puts events in it: ``AllReady``, a call's ``Result`` and
``StreamItem`` messages, ``Finished`` when every rank is done, ``Crashed`` when the group fails.
A ``PendingCall`` is the owner's record of one call: its inbox and the ranks still busy.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from minifal.distributed.errors import DistributedWorkerCrashed


@dataclass(frozen=True)
class AllReady:
    seconds: float


@dataclass(frozen=True)
class Finished:
    """Every rank said ``CallDone``; ``rank_errors``: the ranks whose ``__call__`` raised."""

    rank_errors: dict[int, str]


@dataclass(frozen=True)
class Crashed:
    error: DistributedWorkerCrashed


class Inbox:
    """Events for one waiter, put by the owner thread, awaited on the waiter's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, event: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the waiter's loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def get(self, timeout: float | None) -> Any:
        return await asyncio.wait_for(self._events.get(), timeout)


@dataclass
class PendingCall:
    call_id: int
    inbox: Inbox
    busy_ranks: set[int]
    rank_errors: dict[int, str] = field(default_factory=dict)
    out_of_step_at: float | None = None
