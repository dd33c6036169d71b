"""The gateway's waiting line: FIFO within a priority, ``normal`` before ``low`` (pure logic)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, Literal, TypeVar

Priority = Literal["normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("normal", "low")
DEFAULT_MAX_QUEUE = 1000
"""Queued requests beyond this are answered 429 (``minifal run --max-queue``; 0: no limit)."""

T = TypeVar("T")


class QueueFull(Exception):
    """The queue holds ``max_size`` requests already; the gateway answers 429."""


class RequestQueue(Generic[T]):
    def __init__(self, max_size: int | None = None) -> None:
        self.max_size = max_size
        self._lines: dict[Priority, deque[T]] = {priority: deque() for priority in PRIORITIES}

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def __iter__(self) -> Iterator[T]:
        """In the order they will be served."""
        for priority in PRIORITIES:
            yield from self._lines[priority]

    @property
    def full(self) -> bool:
        return self.max_size is not None and len(self) >= self.max_size

    def push(self, item: T, priority: Priority = "normal", over_limit: bool = False) -> None:
        """At the back of its line; ``over_limit``: even past ``max_size`` (a request the
        gateway accepted already, resumed from the job store)."""
        if self.full and not over_limit:
            raise QueueFull(f"the queue is full ({self.max_size} requests waiting)")
        self._lines[priority].append(item)

    def push_front(self, item: T, priority: Priority = "normal") -> None:
        """Put back a request that must be served first (a retry), even past ``max_size``."""
        self._lines[priority].appendleft(item)

    def pop(self) -> T | None:
        for priority in PRIORITIES:
            if self._lines[priority]:
                return self._lines[priority].popleft()
        return None

    def position(self, item: T) -> int | None:
        """0-based place in line, as fal's ``queue_position``."""
        for index, queued in enumerate(self):
            if queued is item:
                return index
        return None

    def remove(self, item: T) -> bool:
        for line in self._lines.values():
            for index, queued in enumerate(line):
                if queued is item:
                    del line[index]  # deque.remove() would take the first *equal* item
                    return True
        return False
