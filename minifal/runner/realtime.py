"""``@fal.realtime`` sessions on a websocket, in fal's four shapes (``realtime_modes``).

Unary and server streaming: each input message is answered (one output, or one per item the
method yields) before the next is read; the session lasts until the client leaves or sends
nothing for ``session_timeout`` seconds. A bad input or an app error is an error frame, and the
session goes on.

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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

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
    session_timeout: float | None,
) -> None:
    session = RealtimeSession(websocket, codec, session_timeout)
    await websocket.accept()
    try:
        if shape.streams_inputs:
            await _serve_input_stream(session, method, shape)
        else:
            await _serve_each_input(session, method)
    except WebSocketDisconnect:
        session.client_gone = True
    await session.close()


async def _serve_each_input(session: RealtimeSession, method: Callable[..., Any]) -> None:
    while True:
        try:
            value = await session.next_input()
        except InputsEnded:
            return
        try:
            async for output in _outputs(method, value):
                await session.send_output(output)
        except WebSocketDisconnect:
            raise
        except Exception as exc:
            await session.send_failure(exc)


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


async def _outputs(method: Callable[..., Any], value: Any) -> AsyncIterator[Any]:
    """The outputs for one input: one for a plain result, each item for an iterator."""
    if inspect.iscoroutinefunction(method):
        result = await method(value)
    elif inspect.isasyncgenfunction(method):
        result = method(value)
    else:
        result = await run_in_threadpool(method, value)
    if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isgenerator(result) or isinstance(result, Iterator):
        while (item := await run_in_threadpool(next, result, _END)) is not _END:
            yield item
    else:
        yield result
