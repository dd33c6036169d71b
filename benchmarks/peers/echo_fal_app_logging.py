"""The echo of benchmarks/http_overhead.py, writing one ``logging`` record and one printed line
per request: what per-request log capture costs when an app does log (``--logging-echo``)."""

import logging

import fal
from pydantic import BaseModel

logger = logging.getLogger("echo")


class Input(BaseModel):
    text: str


class Output(BaseModel):
    text: str


class LoggingEcho(fal.App):
    @fal.endpoint("/")
    def echo(self, input: Input) -> Output:
        logger.info("echo %s", input.text)
        print("echoed", len(input.text))
        return Output(text=input.text)
