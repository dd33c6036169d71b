"""An app that scales from zero (``min_concurrency=0``, ``max_concurrency=2``, ``keep_alive=5``).

``/`` sleeps for the asked time and answers which runner (id and pid) served the request. Each
attempt is logged to ``<data dir>/started.log`` and each finished one to ``completed.log``
(``<request id> <pid>`` lines), so the tests can tell a retried request from one answered twice.
"""

import os
import time
from pathlib import Path

import fal
from pydantic import BaseModel, Field


def log_line(name: str, request_id: str) -> None:
    data_dir = Path(os.environ["MINIFAL_DATA_DIR"])
    with (data_dir / name).open("a") as log:  # one short O_APPEND write per line
        log.write(f"{request_id} {os.getpid()}\n")


class SleepInput(BaseModel):
    seconds: float = Field(default=1.0, ge=0, le=30)


class SleepOutput(BaseModel):
    runner_id: str
    pid: int
    request_id: str


class ScalingApp(fal.App):
    machine_type = "S"
    min_concurrency = 0
    max_concurrency = 2
    keep_alive = 5

    @fal.endpoint("/")
    def sleep(self, input: SleepInput) -> SleepOutput:
        request_id = self.current_request.request_id
        log_line("started.log", request_id)
        time.sleep(input.seconds)
        log_line("completed.log", request_id)
        return SleepOutput(
            runner_id=os.environ["MINIFAL_RUNNER_ID"], pid=os.getpid(), request_id=request_id
        )
