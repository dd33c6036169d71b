"""uvicorn's server, minus re-raising the stop signal once it has stopped.

uvicorn records SIGTERM/SIGINT and raises it again after shutdown, so a process that drained
its requests and ran its teardown would still die of SIGTERM (exit -15) or a KeyboardInterrupt.
Runners and the gateway exit 0 after a clean stop; a second Ctrl-C still forces the exit.
"""

from __future__ import annotations

import signal

import uvicorn


class QuietExitServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: object) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
