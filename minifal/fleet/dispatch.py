"""Which runner takes the next request (pure logic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class Dispatchable(Protocol):
    @property
    def accepts_requests(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def last_dispatch(self) -> float: ...


R = TypeVar("R", bound=Dispatchable)


def choose_runner(runners: Sequence[R], max_multiplexing: int) -> R | None:
    """The ready runner with the fewest requests in flight, never above ``max_multiplexing``.

    Ties go to the runner that was given work longest ago, so load spreads evenly.
    """
    candidates = [r for r in runners if r.accepts_requests and r.in_flight < max_multiplexing]
    if not candidates:
        return None
    return min(candidates, key=lambda runner: (runner.in_flight, runner.last_dispatch))
