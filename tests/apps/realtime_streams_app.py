"""Realtime endpoints whose input is a stream (client streaming and bidirectional), in every
form fal accepts, for tests/test_realtime_streams.py.

Each endpoint notes in ``<data dir>/<name>.log`` when its input stream ended, so the tests can
see that a disconnect or an idle session ends the iterator.
"""

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import fal
from fal.exceptions import AppException
from pydantic import BaseModel, Field

# Short enough to keep the tests quick, long enough that a loaded machine's scheduling gaps
# between a client's back-to-back frames never end a stream early.
IDLE_SECONDS = 2.0


def note(name: str, line: str) -> None:
    with open(Path(os.environ["MINIFAL_DATA_DIR"]) / f"{name}.log", "a") as log:
        log.write(line + "\n")


class Frame(BaseModel):
    text: str
    index: int = Field(default=0, ge=0)


class Echo(BaseModel):
    text: str
    index: int
    seen: int


class Number(BaseModel):
    value: float


class Total(BaseModel):
    total: float
    count: int


class StreamsApp(fal.App):
    machine_type = "S"

    @fal.realtime("/echo")
    async def echo(self, inputs: AsyncIterator[Frame]) -> AsyncIterator[Echo]:
        """Bidirectional, an async generator: one output per input frame, as it comes."""
        seen, first = 0, ""
        try:
            async for frame in inputs:
                seen += 1
                first = first or frame.text
                if frame.text == "fail":
                    raise AppException("cannot echo that")
                if frame.text == "crash":
                    raise ZeroDivisionError("secret stream detail")
                yield Echo(text=frame.text.upper(), index=frame.index, seen=seen)
        finally:
            note("echo", f"{first} ended after {seen}")

    @fal.realtime("/echo/returned")
    async def echo_returned(self, inputs: AsyncIterator[Frame]) -> AsyncIterator[Echo]:
        """Bidirectional, a coroutine that returns an async iterator."""

        async def outputs() -> AsyncGenerator[Echo, None]:
            async for frame in inputs:
                yield Echo(text=frame.text[::-1], index=frame.index, seen=0)

        return outputs()

    @fal.realtime("/echo/idle", session_timeout=IDLE_SECONDS)
    async def echo_idle(self, inputs: AsyncIterator[Frame]) -> AsyncIterator[Echo]:
        seen = 0
        async for frame in inputs:
            seen += 1
            yield Echo(text=frame.text, index=frame.index, seen=seen)
        note("echo_idle", f"ended after {seen}")

    @fal.realtime("/sum", session_timeout=IDLE_SECONDS)
    async def running_sum(self, inputs: AsyncIterator[Number]) -> Total:
        """Client streaming: one output once the inputs end (the client went idle or left)."""
        total, count = 0.0, 0
        async for number in inputs:
            total += number.value
            count += 1
        note("sum", f"{total:g} ended after {count}")
        return Total(total=total, count=count)

    @fal.realtime("/sum/first-three")
    async def sum_first_three(self, inputs: AsyncIterator[Number]) -> Total:
        """Client streaming that stops reading by itself: its output ends the session."""
        total, count = 0.0, 0
        async for number in inputs:
            total += number.value
            count += 1
            if count == 3:
                break
        return Total(total=total, count=count)

    @fal.realtime("/dicts")
    async def dicts(self, inputs: AsyncIterator[dict]) -> AsyncIterator[dict]:
        """Raw dicts in and out, as fal's published apps write it."""
        async for item in inputs:
            yield {"keys": sorted(item), "size": len(item)}

    @fal.realtime("/untyped")
    async def untyped(self, inputs: AsyncIterator) -> AsyncIterator:
        async for item in inputs:
            yield {"got": item}

    @fal.realtime(
        "/json",
        content_type="application/json",
        encode_message=lambda message: json.dumps(message).encode(),
        decode_message=json.loads,
    )
    async def json_frames(self, inputs: AsyncIterator[Frame]) -> AsyncIterator[Echo]:
        """The app's own codec instead of msgpack."""
        async for frame in inputs:
            yield Echo(text=frame.text, index=frame.index, seen=0)

    @fal.realtime("/unary")
    def unary(self, input: Frame) -> Echo:
        return Echo(text=input.text, index=input.index, seen=1)
