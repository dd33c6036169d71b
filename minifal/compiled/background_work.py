"""Work a runner's compiled modules go on with after ``setup()``, and its stop at shutdown.

Serving while compiling, a precompiled block hands its compiles to a background thread and the
runner serves meanwhile (``precompiled/switchover.py``). Whatever runs so registers how to stop
it; the runner's shutdown calls :func:`stop_all` after ``teardown()``. No torch here: the runner
imports this module whether or not the app uses torch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

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
