"""``@fal.realtime`` sessions: msgpack messages over a websocket.

Each binary message is one input; the method's result is sent back as one msgpack message, or as
several when the method returns an iterator (server streaming). Errors are JSON text frames in
fal's shape ``{"type": "x-fal-error", "error": CODE, "reason": text}``; a bad input does not end
the session.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import json
import logging
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from minifal.exceptions import AppException, FieldException

logger = logging.getLogger("minifal.runner")

_END = object()
_STREAM_TYPES = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.Generator,
    collections.abc.AsyncGenerator,
}


def input_adapter(signature: inspect.Signature) -> TypeAdapter:
    parameters = list(signature.parameters.values())
    if len(parameters) != 1:
        raise TypeError("a realtime method takes exactly one input argument")
    annotation = parameters[0].annotation
    if annotation is inspect.Parameter.empty:
        raise TypeError("a realtime method's input needs a type annotation (a pydantic model)")
    if typing.get_origin(annotation) in _STREAM_TYPES:
        raise TypeError(
            "client-streaming realtime methods (an iterator input) are not supported by minifal"
        )
    return TypeAdapter(annotation)


def pack(value: Any) -> bytes:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    return msgpack.packb(value, default=to_jsonable_python, use_bin_type=True)


def _error_frame(code: str, reason: Any) -> dict[str, Any]:
    return {"type": "x-fal-error", "error": code, "reason": reason}


async def _outputs(method: Callable[..., Any], value: Any) -> AsyncIterator[Any]:
    if inspect.iscoroutinefunction(method):
        result = await method(value)
    elif inspect.isasyncgenfunction(method):
        result = method(value)
    else:
        result = await run_in_threadpool(method, value)
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isgenerator(result) or isinstance(result, Iterator):
        while (item := await run_in_threadpool(next, result, _END)) is not _END:
            yield item
    else:
        yield result


async def serve_realtime_session(
    websocket: WebSocket,
    method: Callable[..., Any],
    adapter: TypeAdapter,
    session_timeout: float | None,
) -> None:
    await websocket.accept()
    try:
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout=session_timeout)
            except TimeoutError:
                await websocket.send_json(
                    _error_frame("TIMEOUT", "no inputs, reconnect when needed!")
                )
                break
            if message["type"] == "websocket.disconnect":
                return
            try:
                raw = message.get("bytes")
                payload = msgpack.unpackb(raw) if raw is not None else json.loads(message["text"])
                value = adapter.validate_python(payload)
            except ValidationError as exc:
                await websocket.send_json(
                    _error_frame("VALIDATION_ERROR", exc.errors(include_url=False))
                )
                continue
            except (ValueError, msgpack.UnpackException) as exc:
                await websocket.send_json(_error_frame("BAD_MESSAGE", str(exc)))
                continue
            try:
                async for output in _outputs(method, value):
                    await websocket.send_bytes(pack(output))
            except (AppException, FieldException) as exc:
                await websocket.send_json(_error_frame("APP_ERROR", exc.message))
            except WebSocketDisconnect:
                raise
            except Exception as exc:
                logger.exception("realtime request failed")
                await websocket.send_json(_error_frame("INTERNAL_ERROR", type(exc).__name__))
        await websocket.close()
    except WebSocketDisconnect:
        return
