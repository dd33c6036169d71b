"""An app whose requests write log lines every way an app does, for the per-request log tests.

``/`` writes ``lines`` rounds of: a ``logging`` record, a ``print``, a ``print`` to stderr, a
line from a thread it starts and one from a ``ThreadPoolExecutor`` task, each naming the
request's ``tag``, with ``pause`` seconds between rounds; two requests with ``meet`` wait for
each other after their first round, so that they run at once (``max_multiplexing = 2``) and
interleave their lines. ``setup()`` logs and prints lines of its
own, which belong to no request. ``/async`` does the same from an async endpoint.
"""

import asyncio
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fal
from pydantic import BaseModel, Field

logger = logging.getLogger("logs_app")


class LogInput(BaseModel):
    tag: str
    lines: int = Field(default=3, ge=0, le=5000)
    pause: float = Field(default=0.0, ge=0, le=1)
    meet: bool = False
    """Wait after the first round until another request with ``meet`` got there too."""


class LogOutput(BaseModel):
    tag: str
    request_id: str


def thread_lines(tag: str, lines: int, pause: float) -> None:
    for index in range(lines):
        print(f"{tag} thread {index}")
        time.sleep(pause)


class LogsApp(fal.App):
    machine_type = "S"
    max_multiplexing = 2
    meeting = threading.Barrier(2, timeout=30)

    def setup(self) -> None:
        logger.info("setup: logged before any request")
        print("setup: printed before any request")
        self.pool = ThreadPoolExecutor(max_workers=2)

    @fal.endpoint("/")
    def write_lines(self, input: LogInput) -> LogOutput:
        tag, lines, pause = input.tag, input.lines, input.pause
        thread = threading.Thread(target=thread_lines, args=(tag, lines, pause))
        thread.start()
        pooled = self.pool.submit(logger.warning, "%s pool task", tag)
        for index in range(lines):
            logger.info("%s logged %d", tag, index)
            print(f"{tag} printed {index}")
            print(f"{tag} stderr {index}", file=sys.stderr)
            time.sleep(pause)
            if index == 0 and input.meet:
                self.meeting.wait()
        thread.join()
        pooled.result()
        return LogOutput(tag=tag, request_id=self.current_request.request_id)

    @fal.endpoint("/async")
    async def write_lines_async(self, input: LogInput) -> LogOutput:
        for index in range(input.lines):
            logger.info("%s async logged %d", input.tag, index)
            print(f"{input.tag} async printed {index}")
            await asyncio.sleep(input.pause)
        return LogOutput(tag=input.tag, request_id=self.current_request.request_id)
