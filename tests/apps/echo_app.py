"""An app written the way fal's docs write them; the tests serve it with ``minifal serve``.

It touches every part of the programming model that does not need the toolkit's files: a pydantic
endpoint, every error class, the request context, SSE, a raw websocket, realtime (unary and
server streaming), async ``setup()``, ``teardown()``/``handle_exit()`` and a ``health()`` override.
"""

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Literal

import fal
from fal.exceptions import (
    AppException,
    CUDAOutOfMemoryException,
    FieldException,
    GPUException,
    RequestCancelledException,
)
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field


def data_dir() -> Path:
    return Path(os.environ.get("MINIFAL_DATA_DIR", "/data"))


def lifecycle(event: str) -> None:
    """Append one line to ``<data dir>/lifecycle.log`` so the tests can see hooks run, in order."""
    with open(data_dir() / "lifecycle.log", "a") as log:
        log.write(event + "\n")


class Input(BaseModel):
    prompt: str = Field(description="The text to echo.", examples=["a cat"])
    repeat: int = Field(default=1, ge=1, le=10, description="How many times to repeat it.")


class Output(BaseModel):
    text: str
    greeting: str


class ErrorInput(BaseModel):
    kind: Literal[
        "field",
        "field_custom",
        "app",
        "cancelled",
        "cuda",
        "cuda_oom",
        "torch_oom",
        "gpu",
        "plain",
        "async_plain",
    ]
    billable_units: int | float | str | None = 0


class SlowInput(BaseModel):
    timeout: float = Field(default=30, ge=0, le=60)


class RequestInfo(BaseModel):
    request_id: str
    endpoint: str
    custom_header: str | None


class CountInput(BaseModel):
    count: int = Field(default=3, ge=0, le=100)


class RealtimeInput(BaseModel):
    prompt: str
    count: int = 1


class RealtimeOutput(BaseModel):
    text: str
    index: int = 0


class EchoApp(fal.App, keep_alive=30, max_concurrency=1):
    machine_type = "S"
    requirements = ["pydantic>=2"]

    async def setup(self) -> None:
        await asyncio.sleep(0)
        self.greeting = "hello from setup"
        self.exit_requested = threading.Event()
        lifecycle("setup")

    def teardown(self) -> None:
        lifecycle("teardown")

    def handle_exit(self) -> None:
        lifecycle("handle_exit")
        self.exit_requested.set()

    def health(self) -> dict:
        return {"version": "echo-1", "greeting": self.greeting}

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(text=" ".join([input.prompt] * input.repeat), greeting=self.greeting)

    @fal.endpoint("/error")
    def error(self, input: ErrorInput) -> Output:
        if input.kind == "field":
            raise FieldException("prompt", "must not be empty", billable_units=input.billable_units)
        if input.kind == "field_custom":
            raise FieldException("count", "too many", status_code=400, type="too_many")
        if input.kind == "app":
            raise AppException("quota exceeded", status_code=429)
        if input.kind == "cancelled":
            raise RequestCancelledException("stopped by the caller")
        if input.kind == "cuda":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if input.kind == "cuda_oom":
            raise CUDAOutOfMemoryException()
        if input.kind == "torch_oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if input.kind == "gpu":
            raise GPUException("the GPU fell off the bus")
        raise ValueError("secret internal detail 1234")

    @fal.endpoint("/error/async")
    async def async_error(self, input: ErrorInput) -> Output:
        raise KeyError("secret async detail 5678")

    @fal.endpoint("/slow")
    def slow(self, input: SlowInput) -> Output:
        lifecycle("slow-start")
        # Ends only once shutdown has begun: the runner must drain this request, not drop it.
        released = self.exit_requested.wait(input.timeout)
        lifecycle("slow-end")
        return Output(text=f"released={released}", greeting=self.greeting)

    @fal.endpoint("/request")
    def request_info(self, input: CountInput) -> RequestInfo:
        request = self.current_request
        return RequestInfo(
            request_id=request.request_id,
            endpoint=request.endpoint,
            custom_header=request.headers.get("x-custom"),
        )

    @fal.endpoint("/request/async")
    async def async_request_info(self, input: CountInput) -> RequestInfo:
        await asyncio.sleep(0)
        request = self.current_request
        return RequestInfo(
            request_id=request.request_id,
            endpoint=request.endpoint,
            custom_header=request.headers.get("x-custom"),
        )

    @fal.endpoint("/stream")
    def stream(self, input: CountInput) -> StreamingResponse:
        def events() -> Iterator[str]:
            for index in range(input.count):
                yield f"data: {json.dumps({'index': index, 'text': f'event {index}'})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            try:
                message = await websocket.receive_text()
            except WebSocketDisconnect:
                return
            await websocket.send_text(f"echo: {message}")

    @fal.realtime("/realtime")
    def realtime(self, input: RealtimeInput) -> RealtimeOutput:
        if input.prompt == "fail":
            raise AppException("cannot do that")
        if input.prompt == "crash":
            raise ZeroDivisionError("secret realtime detail")
        return RealtimeOutput(text=input.prompt.upper())

    @fal.realtime("/realtime/async")
    async def realtime_async(self, input: RealtimeInput) -> RealtimeOutput:
        await asyncio.sleep(0)
        return RealtimeOutput(text=input.prompt[::-1], index=input.count)

    @fal.realtime("/realtime/async-stream")
    async def realtime_async_stream(self, input: RealtimeInput) -> AsyncIterator[RealtimeOutput]:
        for index in range(input.count):
            await asyncio.sleep(0)
            yield RealtimeOutput(text=input.prompt, index=index)

    @fal.endpoint("/bad-output")
    def bad_output(self) -> Output:
        return {"text": "the greeting is missing"}  # type: ignore[return-value]

    @fal.endpoint("/ping")
    def ping(self) -> dict:
        return {"pong": True}

    @fal.realtime("/realtime/stream")
    def realtime_stream(self, input: RealtimeInput) -> Iterator[RealtimeOutput]:
        for index in range(input.count):
            yield RealtimeOutput(text=input.prompt, index=index)
