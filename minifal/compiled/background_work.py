"""Work a runner's compiled modules go on with after ``setup()``, and its stop at shutdown.

Serving while compiling, a precompiled block hands its compiles to a background thread and the
runner serves meanwhile (``precompiled/switchover.py``). Whatever runs so registers how to stop
it; the runner's shutdown calls :func:`stop_all` after ``teardown()``. Each of its steps that
runs on the GPU (a check against eager, a CUDA-graph capture) goes through :data:`GPU_GATE`,
which a suspension closes while the App's weights are away from the GPU. No torch here: the
runner imports this module whether or not the app uses torch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger("minifal.compiled")

STOP_TIMEOUT_S = 10.0  # how long a shutdown waits for each piece of work to end

_stops: dict[int, Callable[[float], None]] = {}
_lock = threading.Lock()


def register(stop: Callable[[float], None]) -> int:
    """Note work that ``stop(timeout)`` ends (bounded); returns its number for :func:`done`."""
    with _lock:
        number = max(_stops, default=0) + 1
        _stops[number] = stop
    return number


def done(number: int) -> None:
    """The work ended by itself."""
    with _lock:
        _stops.pop(number, None)


def stop_all(timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop every registered piece of work, each within ``timeout`` seconds."""
    with _lock:
        stops = list(_stops.values())
        _stops.clear()
    for stop in stops:
        try:
            stop(timeout)
        except Exception:  # a shutdown goes on
            logger.exception("stopping background compile work failed")


class GpuGate:
    """Lets background GPU steps run, one after another with requests, except while a
    suspension has closed it: then a step waits for the reopening, and closing waits (bounded)
    for the steps in progress to end, so that no kernel reads weights that are not there."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._closed = False
        self._running = 0

    @contextmanager
    def step(self) -> Iterator[None]:
        """Around one background GPU step; waits while the gate is closed (a suspension: as
        long as the runner stays suspended; a suspended runner is killed, never stopped)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._closed)
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def close(self, timeout: float) -> bool:
        """No new step; True once none runs, False (and open again) if one still runs after
        ``timeout`` seconds."""
        with self._changed:
            self._closed = True
            if self._changed.wait_for(lambda: self._running == 0, timeout):
                return True
            self._closed = False
            self._changed.notify_all()
            return False

    def open(self) -> None:
        with self._changed:
            self._closed = False
            self._changed.notify_all()


GPU_GATE = GpuGate()
"""The process's one gate: background compile work steps through it, suspensions close it."""
