"""Importing the modules of a record of imports (``import_record.py``) ahead of the runners that
will need them: at once (``preload``, the fork server's start) or one module a step (``Preload``,
between the fork server's other work).
"""

from __future__ import annotations

import collections
import importlib
import sys
import time


def preload(names: list[str]) -> tuple[int, list[str]]:
    """Import ``names``; the number imported and those that failed (skipped: the runner will
    import what it needs itself)."""
    loading = Preload(names)
    while not loading.done:
        loading.step()
    return len(names) - len(loading.failed), loading.failed


class Preload:
    """One preload in progress: the recorded modules this process lacked when it was asked,
    imported one per ``step()``."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.pending = collections.deque(names)
        self.failed: list[str] = []
        self.started = time.monotonic()

    @property
    def done(self) -> bool:
        return not self.pending

    def step(self) -> bool:
        """Import the next module (its own imports may have brought it already); whether an
        import ran."""
        name = self.pending.popleft()
        if name in sys.modules:
            return False
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):
            self.failed.append(name)
        return True

    def result(self, hazards: list[str]) -> dict:
        return {
            "imported": sum(name in sys.modules for name in self.names),
            "failed": self.failed,
            "seconds": round(time.monotonic() - self.started, 3),
            "hazards": hazards,
        }
