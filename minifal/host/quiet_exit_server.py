"""uvicorn's server, minus re-raising the stop signal once it has stopped.

uvicorn records SIGTERM/SIGINT and raises it again after shutdown, so a process that drained
its requests and ran its teardown would still die of SIGTERM (exit -15) or a KeyboardInterrupt.
Runners and the gateway exit 0 after a clean stop; a second Ctrl-C still forces the exit.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import uvicorn


class QuietExitServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_exit = on_exit
        """Called once, from the signal handler, when the first stop signal arrives."""

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            if not self.should_exit and self.on_exit is not None:
                self.on_exit()
            self.should_exit = True
