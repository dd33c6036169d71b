"""``@fal.realtime`` sessions on a websocket, in fal's four shapes (``realtime_modes``).

Unary and server streaming, as fal serves them: inputs are read as they arrive into a buffer of
``buffering`` inputs (the oldest is dropped when a new one finds it full; unbounded when None),
while the method answers them in order, one output (or one per item it yields) per call. With
``max_batch_size`` > 1, a call takes up to that many waiting inputs at once,
``method(first, *others)``, as long as ``first.can_batch(next, batch_size)`` agrees when the
input type defines it; the method returns one output for the batch. The session lasts until the
client leaves or sends nothing for ``session_timeout`` seconds (inputs already read are answered
first). A bad input or an app error is an error frame, and the session goes on.

Client streaming and bidirectional: the method is called once with an ``InputStream`` of the
session's inputs; it ends when the client disconnects or goes idle for ``session_timeout``. A bad
frame is answered with an error frame and skipped; an exception from the method is an error
frame that ends the session. Outputs are sent as the method yields them.

A session that ends because it was idle says so with fal's TIMEOUT frame, then closes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from minifal.endpoints import RealtimeOptions
from minifal.exceptions import AppException, FieldException
from minifal.runner.realtime_frames import (
    APP_ERROR,
    INTERNAL_ERROR,
    TIMEOUT,
    TIMEOUT_REASON,
    BadFrame,
    FrameCodec,
    error_frame,
)
from minifal.runner.realtime_modes import RealtimeShape

logger = logging.getLogger("minifal.runner")

_END = object()


class InputsEnded(Exception):
    """The client disconnected or the session timed out: no more inputs will come."""


class RealtimeSession:
    """One realtime websocket: reads validated inputs, writes outputs and error frames."""

    def __init__(
        self, websocket: WebSocket, codec: FrameCodec, session_timeout: float | None
    ) -> None:
        self.websocket = websocket
        self.codec = codec
        self.session_timeout = session_timeout
        self.timed_out = False
        self.client_gone = False
        self._send_lock = asyncio.Lock()

    async def next_input(self) -> Any:
        """The next valid input; bad frames are answered with an error frame and skipped.

        Raises ``InputsEnded`` once the client left or sent nothing for ``session_timeout``.
        """
        while not (self.timed_out or self.client_gone):
            try:
                message = await asyncio.wait_for(self.websocket.receive(), self.session_timeout)
            except TimeoutError:
                self.timed_out = True
                break
            if message["type"] == "websocket.disconnect":
                self.client_gone = True
                break
            try:
                return self.codec.decode(message)
            except BadFrame as bad:
                await self.send_error(bad.code, bad.reason)
        raise InputsEnded

    async def send_output(self, output: Any) -> None:
        """Raises ``WebSocketDisconnect`` when the client is gone."""
        await self._send(self.codec.encode(output))

    async def send_error(self, code: str, reason: Any) -> None:
        """Best effort: a client that already left is not an error."""
        with suppress(WebSocketDisconnect):
            await self._send(error_frame(code, reason))

    async def send_failure(self, exc: Exception) -> None:
        """The error frame for an exception the method raised; tracebacks go to the log only."""
        if isinstance(exc, AppException | FieldException):
            await self.send_error(APP_ERROR, exc.message)
            return
        logger.error("realtime request failed", exc_info=exc)
        await self.send_error(INTERNAL_ERROR, type(exc).__name__)

    async def close(self) -> None:
        if self.timed_out and not self.client_gone:
            await self.send_error(TIMEOUT, TIMEOUT_REASON)
        with suppress(WebSocketDisconnect, RuntimeError):
            await self.websocket.close()

    async def _send(self, message: bytes | str) -> None:
        if self.client_gone:
            raise WebSocketDisconnect(1006)
        async with self._send_lock:
            try:
                if isinstance(message, bytes):
                    await self.websocket.send_bytes(message)
                else:
                    await self.websocket.send_text(message)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.client_gone = True
                raise WebSocketDisconnect(1006) from None


class InputStream:
    """What a client-streaming or bidirectional method iterates: the session's inputs.

    ``async for input in inputs`` ends when the client disconnects or sends nothing for the
    endpoint's ``session_timeout``.
    """

    def __init__(self, session: RealtimeSession) -> None:
        self._session = session

    def __aiter__(self) -> InputStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._session.next_input()
        except InputsEnded:
            raise StopAsyncIteration from None


async def serve_realtime_session(
    websocket: WebSocket,
    method: Callable[..., Any],
    shape: RealtimeShape,
    codec: FrameCodec,
    options: RealtimeOptions,
) -> None:
    session = RealtimeSession(websocket, codec, options.session_timeout)
    await websocket.accept()
    try:
        if shape.streams_inputs:
            await _serve_input_stream(session, method, shape)
        else:
            await _serve_buffered_inputs(session, method, options)
    except WebSocketDisconnect:
        session.client_gone = True
    await session.close()


def take_batch(pending: deque[Any], max_batch_size: int) -> list[Any]:
    """The next call's inputs: the oldest waiting one, and after it as many of the next ones
    (up to ``max_batch_size`` in all) as its ``can_batch(other, current_batch_size)`` accepts
    (all of them when its type has no ``can_batch``), as fal batches them."""
    first = pending.popleft()
    batch = [first]
    can_batch = getattr(first, "can_batch", None)
    while pending and len(batch) < max_batch_size:
        if can_batch is not None and not can_batch(pending[0], len(batch)):
            break
        batch.append(pending.popleft())
    return batch


async def _read_inputs(
    session: RealtimeSession, pending: deque[Any], arrived: asyncio.Event
) -> None:
    """Into ``pending`` as they come, until the inputs end; ``arrived`` tells the server."""
    try:
        while True:
            pending.append(await session.next_input())
            arrived.set()
    except InputsEnded:
        return
    finally:
        arrived.set()


async def _serve_buffered_inputs(
    session: RealtimeSession, method: Callable[..., Any], options: RealtimeOptions
) -> None:
    pending: deque[Any] = deque(maxlen=options.buffering)
    arrived = asyncio.Event()
    reader = asyncio.create_task(_read_inputs(session, pending, arrived))
    try:
        while True:
            while not pending and not reader.done():
                arrived.clear()
                await arrived.wait()
            if not pending:
                reader.result()  # the reader's own failure (a dropped socket), if any
                return
            batch = take_batch(pending, options.max_batch_size)
            try:
                async for output in _outputs(method, *batch):
                    await session.send_output(output)
            except WebSocketDisconnect:
                raise
            except Exception as exc:
                await session.send_failure(exc)
    finally:
        reader.cancel()
        with suppress(asyncio.CancelledError, WebSocketDisconnect):
            await reader


async def _serve_input_stream(
    session: RealtimeSession, method: Callable[..., Any], shape: RealtimeShape
) -> None:
    inputs = InputStream(session)
    try:
        if shape.mode == "client_streaming":
            await session.send_output(await method(inputs))
            return
        outputs = method(inputs)
        if inspect.isawaitable(outputs):
            outputs = await outputs
        if not hasattr(outputs, "__aiter__"):
            raise TypeError(
                f"bidirectional realtime method {method.__name__}() must yield its outputs "
                f"or return an async iterator, got {type(outputs).__name__}"
            )
        try:
            async for output in outputs:
                await session.send_output(output)
        finally:
            # A client that left (or a failed send) stops the method where it yielded.
            if hasattr(outputs, "aclose"):
                await outputs.aclose()
    except WebSocketDisconnect:
        raise
    except Exception as exc:
        await session.send_failure(exc)


async def _outputs(method: Callable[..., Any], *inputs: Any) -> AsyncIterator[Any]:
    """The outputs for one call (one input, or a batch): one for a plain result, each item
    for an iterator."""
    if inspect.iscoroutinefunction(method):
        result = await method(*inputs)
    elif inspect.isasyncgenfunction(method):
        result = method(*inputs)
    else:
        result = await run_in_threadpool(method, *inputs)
    if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isgenerator(result) or isinstance(result, Iterator):
        while (item := await run_in_threadpool(next, result, _END)) is not _END:
            yield item
    else:
        yield result
