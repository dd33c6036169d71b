"""An app with ``request_timeout=2`` whose endpoint can outlive it.

``/`` sleeps ``seconds``; with ``slow_once`` only the first attempt of a request sleeps (attempts
are counted in ``<data dir>/attempts-<request id>``), so a retried request then succeeds.
"""

import os
import time
from pathlib import Path

import fal
from pydantic import BaseModel, Field


class SleepInput(BaseModel):
    seconds: float = Field(default=10.0, ge=0, le=30)
    slow_once: bool = False


class SleepOutput(BaseModel):
    pid: int
    attempt: int


class TimeoutApp(fal.App):
    machine_type = "S"
    request_timeout = 2

    @fal.endpoint("/")
    def sleep(self, input: SleepInput) -> SleepOutput:
        data_dir = Path(os.environ["MINIFAL_DATA_DIR"])
        attempts = data_dir / f"attempts-{self.current_request.request_id}"
        with attempts.open("a") as log:
            log.write(f"{os.getpid()}\n")
        attempt = len(attempts.read_text().splitlines())
        if attempt == 1 or not input.slow_once:
            time.sleep(input.seconds)
        return SleepOutput(pid=os.getpid(), attempt=attempt)
