"""``CompilePhase``: one precompiled compile's ``precompiled.compile`` startup phase.

Its start line is written when the compile starts (the Dynamo capture is part of it), so that
the console and the dashboard say what runs: "compiling UNet 1x4x64x64 in a worker: 45 s, last
time 101 s" (``startup/progress.py``). The store's ``save()`` ends it with the compile's
timings; every other way out must end it too, with an ``error`` (Dynamo refuses the call,
Inductor or the worker fails, the artifact differs from eager or fails its first call, the
deadline, the runner shuts down), or a live runner would show it compiling for as long as it
runs. Ending is idempotent and thread-safe: an ``except`` or ``finally`` may end it on every
path, and an abort from another thread may race the thread that collects the worker's result.
"""

from __future__ import annotations

import threading
from typing import Any

from minifal.startup.events import begin, finish

PHASE = "precompiled.compile"


class CompilePhase:
    """The open ``precompiled.compile`` phase of one call signature's compile."""

    def __init__(
        self,
        key: str,
        module: str,
        signature: str,
        in_worker: bool,
        started: float | None = None,
    ) -> None:
        self._details: dict[str, Any] = {
            "key": key,
            "module": module,
            "signature": signature,
            "in_worker": in_worker,
        }
        self._opened = begin(PHASE, started, **self._details)
        self._lock = threading.Lock()
        self.ended = False

    @property
    def started(self) -> float:
        return self._opened.start

    def succeeded(self, **details: Any) -> None:
        """End it: the artifact is compiled (``details``: its timings, whether it was saved)."""
        self._end({**self._details, **details})

    def failed(self, why: str | BaseException) -> None:
        """End it as failed (``why``: in words, or the exception), unless it ended already."""
        if isinstance(why, BaseException):
            why = f"{type(why).__name__}: {why}"
        self._end({**self._details, "error": why})

    def moved_inline(self, why: BaseException) -> CompilePhase:
        """End it (no worker took the compile: ``why``) and start the inline compile's."""
        self.failed(f"not handed to a worker: {why}")
        details = {**self._details, "in_worker": False}
        return CompilePhase(**details)

    def _end(self, details: dict[str, Any]) -> None:
        with self._lock:
            if self.ended:
                return
            self.ended = True
        finish(self._opened, **details)
