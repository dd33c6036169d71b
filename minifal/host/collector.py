"""Python's garbage collector around ``setup()``: its pauses timed, and kept off the objects
that live for the whole process.

After its imports a runner's heap holds 0.5-1 M objects that the cycle collector tracks (torch,
transformers, diffusers, the runner's own server). A full collection walks every one of them:
about 0.25 s on a 2-core CPU host. ``setup()`` allocates heavily (unpickling compiled graphs,
compiling their generated modules, building models), which triggers full collections in the
middle of it, and each one walks the imports again.

``gc.freeze()`` moves every object alive now into a permanent generation that collections skip.
The runner freezes before ``setup()`` (the imports: modules, classes, functions, never garbage)
and after it (the models and compiled graphs it built, which the runner keeps until it exits),
so collections during ``setup()`` and while serving walk only what is young. The fork server
freezes before each fork, as Python's documentation advises for a server that forks without
exec, so a child's collections do not write to pages it shares with the server. The cost: the
cycle collector never frees a frozen object. Freed by its reference count it still is; held
only by a reference cycle (garbage at the freeze, or dropped later), it stays until the process
exits.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class CollectorPauses:
    """Time spent in collections (every generation) while registered, and how many were full."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self.full_collections = 0
        self._started: float | None = None

    def _observe(self, event: str, info: dict[str, Any]) -> None:
        if event == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None
            self.collections += 1
            self.full_collections += info.get("generation") == 2

    def details(self) -> dict[str, Any]:
        return {
            "gc_s": round(self.seconds, 3),
            "gc_collections": self.collections,
            "gc_full_collections": self.full_collections,
        }


@contextmanager
def pauses_timed() -> Iterator[CollectorPauses]:
    """Count and time the collector's pauses during the block (any thread's)."""
    pauses = CollectorPauses()
    gc.callbacks.append(pauses._observe)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(pauses._observe)


def freeze_survivors() -> int:
    """Move every object alive now out of the collector's reach; the number frozen so far."""
    gc.freeze()
    return gc.get_freeze_count()
