"""The kinds of apps fal's own end-to-end tests run (fal-ai/fal,
``projects/fal/tests/e2e/test_apps.py``), written again for minifal's peer suite
(``tests/test_fal_e2e_apps.py``): the same endpoints, settings and behaviour, so that the same
assertions hold. Each class is served on its own: ``minifal run fal_e2e_apps.py::ClassName``.

Deviations, each to keep the suite quick: fixed costs of seconds are fractions of one
(``CancellableApp.request_timeout`` is 2 s, the batched realtime call costs 1 s, the
multiplexed apps sleep 1 s); fal's ``addition_app`` is a ``@fal.function(serve=True)``, here an
App with the same endpoint (minifal serves App classes).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from typing import Any

import fal
from fal.exceptions import AppException, FieldException, RequestCancelledException
from fal.ref import get_current_app
from fal.toolkit.utils.endpoint import cancel_on_disconnect
from fastapi import HTTPException, Request, WebSocket
from pydantic import BaseModel


class Input(BaseModel):
    lhs: int
    rhs: int
    wait_time: int = 0


class StatefulInput(BaseModel):
    value: int


class FieldInput(BaseModel):
    value: int | float | str


class Output(BaseModel):
    result: int


def _sleep_seconds(seconds: int) -> None:
    for _ in range(seconds):
        print("sleeping...", flush=True)
        time.sleep(1)


class AdditionApp(fal.App, keep_alive=60, max_concurrency=1):
    machine_type = ["S", "M"]

    @fal.endpoint("/")
    def add(self, input: Input) -> Output:
        _sleep_seconds(input.wait_time)
        return Output(result=input.lhs + input.rhs)


class StatefulAdditionApp(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "S"

    async def setup(self) -> None:
        self.counter = 0

    @fal.endpoint("/reset")
    def reset(self) -> Output:
        self.counter = 0
        return Output(result=self.counter)

    @fal.endpoint("/increment")
    def increment(self, input: StatefulInput) -> Output:
        self.counter += input.value
        return Output(result=self.counter)

    @fal.endpoint("/decrement")
    def decrement(self, input: StatefulInput) -> Output:
        self.counter -= input.value
        return Output(result=self.counter)


class SleepInput(BaseModel):
    wait_time: float


class SleepOutput(BaseModel):
    slept: bool = True


class SleepApp(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "XS"

    @fal.endpoint("/")
    async def sleep(self, input: SleepInput) -> SleepOutput:
        steps = int(input.wait_time / 0.25)
        for _ in range(steps):
            print("sleeping...", flush=True)
            await asyncio.sleep(0.25)
        return SleepOutput(slept=True)


class QueueBlockingApp(fal.App, keep_alive=300, max_concurrency=1, max_multiplexing=1):
    """One request at a time: the next waits in the queue (for its start_timeout)."""

    machine_type = "XS"

    @fal.endpoint("/")
    async def sleep(self, input: SleepInput) -> SleepOutput:
        await asyncio.sleep(input.wait_time)
        return SleepOutput(slept=True)


class ExceptionApp(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "XS"

    @fal.endpoint("/fail")
    def fail(self) -> Output:
        raise Exception("this app is designed to fail!")

    @fal.endpoint("/app-exception")
    def app_exception(self) -> Output:
        raise AppException(message="this app is designed to fail", status_code=401)

    @fal.endpoint("/field-exception")
    def field_exception(self, input: Input) -> Output:
        raise FieldException(field="rhs", message="rhs must be an integer")

    @fal.endpoint("/field-exception-units")
    def field_exception_units(self, input: FieldInput) -> Output:
        raise FieldException(
            field="value", message="value must be a valid value", billable_units=input.value
        )

    @fal.endpoint("/cuda-exception")
    def cuda_exception(self) -> Output:
        raise RuntimeError("CUDA out of memory")  # torch's allocator says so

    @fal.endpoint("/cuda-exception-2")
    def cuda_exception_2(self) -> Output:
        raise RuntimeError("NVML_SUCCESS == r INTERNAL ASSERT FAILED")  # torch, out of memory

    @fal.endpoint("/cuda-exception-3")
    def cuda_exception_3(self) -> Output:
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")


class CancellableApp(fal.App, keep_alive=300, max_concurrency=1, request_timeout=2):
    skip_retry_conditions = ["timeout"]
    task: asyncio.Task[None] | None = None
    running = 0

    async def _wait(self, input: Input) -> Output:
        if self.running > 0:
            raise Exception("App is already running")
        self.task = asyncio.create_task(asyncio.sleep(input.wait_time))
        self.running += 1
        try:
            await self.task
        except asyncio.CancelledError:
            print("Task was cancelled", flush=True)
            if not self.task.done():
                self.task.cancel()
                with suppress(BaseException):
                    await self.task
            raise RequestCancelledException("Request cancelled by the client.") from None
        finally:
            self.task = None
            self.running -= 1
        return Output(result=input.lhs + input.rhs)

    @fal.endpoint("/")
    async def sleep(self, input: Input) -> Output:
        return await self._wait(input)

    @fal.endpoint("/well-handled")
    async def well_handled(self, input: Input, request: Request) -> Output:
        async with cancel_on_disconnect(request):
            return await self._wait(input)

    @fal.endpoint("/cancel")
    async def cancel_handler(self) -> Output:
        if self.task:
            self.task.cancel()
            with suppress(BaseException):
                await self.task
            self.task = None
        return Output(result=0)


class HealthOverrideApp(fal.App, keep_alive=300, max_concurrency=1):
    """Health declared at /ready (POST, plus a GET route), while /health is broken (502)."""

    machine_type = "S"

    @fal.endpoint("/")
    def run(self, input: Input) -> Output:
        return Output(result=input.lhs + input.rhs)

    @fal.endpoint(
        "/ready",
        health_check=fal.HealthCheck(
            start_period_seconds=1, timeout_seconds=5, failure_threshold=1, call_regularly=True
        ),
    )
    def ready_post(self) -> Output:
        return Output(result=0)

    def _add_extra_routes(self, app: Any) -> None:
        super()._add_extra_routes(app)

        @app.get("/ready")
        def ready_get() -> dict[str, str]:
            return {"status": "ok"}

    def health(self) -> dict[str, Any]:
        raise HTTPException(status_code=502, detail="intentionally broken")


class RTInput(BaseModel):
    prompt: str

    def can_batch(self, other: RTInput, current_batch_size: int = 1) -> bool:
        return "don't batch" not in other.prompt


class RTOutput(BaseModel):
    text: str


class RTOutputs(BaseModel):
    texts: list[str]


def json_encode_message(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def json_decode_message(message: bytes) -> Any:
    return json.loads(message.decode("utf-8"))


BATCH_COST_SECONDS = 1.0


class RealtimeApp(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "S"

    @fal.endpoint("/")
    def generate(self, input: RTInput) -> RTOutput:
        return RTOutput(text=input.prompt)

    @fal.endpoint("/ws", is_websocket=True)
    async def generate_ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(3):
            await websocket.send_json({"message": "Hello world!"})
        await websocket.close()

    @fal.realtime("/realtime")
    def generate_rt(self, input: RTInput) -> RTOutput:
        return RTOutput(text=input.prompt)

    @fal.realtime("/realtime/server-streaming", buffering=10)
    async def generate_rt_server_streaming(self, input: RTInput) -> AsyncIterator[RTOutput]:
        for index in range(3):
            yield RTOutput(text=f"{input.prompt}:{index}")

    @fal.realtime("/realtime/server-streaming-sync", buffering=10)
    def generate_rt_server_streaming_sync(self, input: RTInput) -> Iterator[RTOutput]:
        for index in range(3):
            yield RTOutput(text=f"{input.prompt}:{index}")

    @fal.realtime("/realtime/client-streaming", session_timeout=0.2)
    async def generate_rt_client_streaming(self, inputs: AsyncIterator[RTInput]) -> RTOutputs:
        return RTOutputs(texts=[item.prompt async for item in inputs])

    @fal.realtime("/realtime/bidi")
    async def generate_rt_bidi(self, inputs: AsyncIterator[RTInput]) -> AsyncIterator[RTOutput]:
        async for item in inputs:
            yield RTOutput(text=f"echo:{item.prompt}")

    @fal.realtime(
        "/realtime/json", encode_message=json_encode_message, decode_message=json_decode_message
    )
    def generate_rt_json(self, input: RTInput) -> RTOutput:
        return RTOutput(text=input.prompt)

    @fal.realtime("/realtime/batched", buffering=10, max_batch_size=4)
    def generate_rt_batched(self, input: RTInput, *inputs: RTInput) -> RTOutputs:
        time.sleep(BATCH_COST_SECONDS)  # a fixed cost per call, whatever the batch
        return RTOutputs(texts=[input.prompt] + [item.prompt for item in inputs])


class BrokenApp(fal.App, keep_alive=300, max_concurrency=1):
    """Its output type has no JSON schema: fal refuses it (no OpenAPI), and so does minifal."""

    machine_type = "S"

    @fal.endpoint("/")
    def broken(self) -> Exception:
        raise Exception("this app is designed to fail")


class HintsApp(fal.App, keep_alive=300, max_concurrency=1):
    machine_type = "S"

    def provide_hints(self) -> list[str]:
        return ["é", "😀"]

    @fal.endpoint("/add")
    def add(self, input: Input) -> Output:
        return Output(result=input.lhs + input.rhs)


MULTIPLEXED_SLEEP_SECONDS = 1.0


def _request_id_seen_elsewhere() -> str:
    """What code without ``self`` reads of the request (through ``fal.ref``)."""
    return get_current_app().current_request.headers.get("x-request-id", "")


class AppRefOutput(BaseModel):
    from_app: str
    from_external_method: str


class AppRefApp(fal.App, keep_alive=300, max_concurrency=1, max_multiplexing=3):
    machine_type = "XS"

    @fal.endpoint("/")
    def run(self, request: Request) -> AppRefOutput:
        request_id = request.headers.get("x-request-id", "")
        time.sleep(MULTIPLEXED_SLEEP_SECONDS)  # overlap the concurrent requests
        return AppRefOutput(from_app=request_id, from_external_method=_request_id_seen_elsewhere())


class RequestContextOutput(BaseModel):
    request_id_from_context: str | None
    endpoint_from_context: str | None
    lifecycle_preference_from_context: dict | None
    request_id_from_header: str | None


def _context_seen_elsewhere() -> dict[str, Any]:
    current_app = get_current_app()
    if current_app is None or current_app.current_request is None:
        return {"request_id": None, "endpoint": None, "lifecycle_preference": None}
    context = current_app.current_request
    return {
        "request_id": context.request_id,
        "endpoint": context.endpoint,
        "lifecycle_preference": context.lifecycle_preference,
    }


class RequestContextApp(fal.App, keep_alive=300, max_concurrency=1, max_multiplexing=3):
    machine_type = "XS"

    @fal.endpoint("/")
    def get_context(self, request: Request) -> RequestContextOutput:
        time.sleep(MULTIPLEXED_SLEEP_SECONDS)  # overlap the concurrent requests
        context = _context_seen_elsewhere()
        return RequestContextOutput(
            request_id_from_context=context["request_id"],
            endpoint_from_context=context["endpoint"],
            lifecycle_preference_from_context=context["lifecycle_preference"],
            request_id_from_header=request.headers.get("x-fal-request-id"),
        )
