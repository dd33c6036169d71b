"""``KeepAliveTimer``: call a function once after a delay, unless cancelled or reset first.

A ``DistributedRunner`` with ``keepalive_interval`` uses it to send ``keepalive_payload`` to its
workers when no request came for that long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class KeepAliveTimer:
    timer: threading.Timer | None

    def __init__(
        self,
        func: Callable[..., Any],
        timeout: int | float,
        start: bool = False,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.func = func
        self.timeout = timeout
        self.args = args
        self.kwargs = kwargs
        self.timer = None
        if start:
            self.start()

    def start(self) -> None:
        self.timer = threading.Timer(self.timeout, self.func, self.args, self.kwargs)
        self.timer.daemon = True  # a pending keepalive never holds the interpreter's exit
        self.timer.name = "minifal-distributed-keepalive"
        self.timer.start()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def reset(self) -> None:
        self.cancel()
        self.start()
