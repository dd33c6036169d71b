"""What travels on a realtime websocket: inputs and outputs (msgpack unless the app says
otherwise) and fal's error frames, JSON text ``{"type": "x-fal-error", "error", "reason"}``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from minifal.endpoints import RealtimeOptions

# fal's codes are TIMEOUT and INTERNAL_ERROR; minifal names the other failures instead of
# dropping the socket (docs/endpoints.md).
TIMEOUT = "TIMEOUT"
TIMEOUT_REASON = "no inputs, reconnect when needed!"
INTERNAL_ERROR = "INTERNAL_ERROR"
APP_ERROR = "APP_ERROR"
VALIDATION_ERROR = "VALIDATION_ERROR"
BAD_MESSAGE = "BAD_MESSAGE"


class BadFrame(Exception):
    """An input frame that does not decode or validate; it becomes an error frame."""

    def __init__(self, code: str, reason: Any) -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason


def error_frame(code: str, reason: Any) -> str:
    # default=str: a validation error's context may hold the exception it came from.
    return json.dumps({"type": "x-fal-error", "error": code, "reason": reason}, default=str)


def msgpack_encode(value: Any) -> bytes:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    return msgpack.packb(value, default=to_jsonable_python, use_bin_type=True)


def msgpack_decode(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


@dataclass(frozen=True)
class FrameCodec:
    """Turns websocket messages into validated inputs and outputs into messages."""

    adapter: TypeAdapter
    encode_message: Callable[[Any], bytes | str] = msgpack_encode
    decode_message: Callable[[bytes], Any] = msgpack_decode

    @classmethod
    def for_endpoint(cls, options: RealtimeOptions, input_type: Any) -> FrameCodec:
        return cls(
            TypeAdapter(input_type),
            options.encode_message or msgpack_encode,
            options.decode_message or msgpack_decode,
        )

    def decode(self, message: dict[str, Any]) -> Any:
        """The input a ``websocket.receive`` message carries. Binary frames use the endpoint's
        codec; a text frame is read as JSON (a minifal extension, handy for debugging)."""
        try:
            raw = message.get("bytes")
            payload = self.decode_message(raw) if raw is not None else json.loads(message["text"])
        except Exception as exc:
            raise BadFrame(BAD_MESSAGE, f"{type(exc).__name__}: {exc}") from exc
        try:
            return self.adapter.validate_python(payload)
        except ValidationError as exc:
            raise BadFrame(VALIDATION_ERROR, exc.errors(include_url=False)) from exc

    def encode(self, output: Any) -> bytes | str:
        if isinstance(output, BaseModel) and self.encode_message is not msgpack_encode:
            output = output.model_dump(mode="json")
        return self.encode_message(output)
