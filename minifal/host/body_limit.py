"""The largest request body a server reads: a 413 instead of reading (or buffering) more.

One ASGI middleware for the gateway and for every runner (``minifal serve`` too). A request
that declares a larger ``Content-Length`` is answered at once, before any of its body is read;
one without (chunked) is read until it passes the limit, then answered the same way.
fal-style inputs carry images as ``data:`` URIs, so the default leaves room for a large image
(a 36 MB file is about 48 MB of base64).
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minifal.host import envs

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``50MB`` -> 50000000, ``1MiB`` -> 1048576, ``123`` -> 123; ValueError otherwise."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (say 50MB, 512KiB or a number of bytes)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"the body limit must be at least one byte, got {text!r}")
    return size


DEFAULT_MAX_BODY_BYTES = parse_size(envs.MAX_BODY_SIZE.default)


def configured_max_body_bytes(value: str | None = None) -> int:
    """``value`` (a command-line option), else ``$MINIFAL_MAX_BODY_SIZE``, else the default."""
    return parse_size(value or envs.MAX_BODY_SIZE.get())


class BodyTooLarge(HTTPException):
    """Raised by the body's ``receive`` once it passes the limit; FastAPI lets an
    ``HTTPException`` through its body parsing, so it ends as this 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = {"detail": BodyTooLarge(self.max_bytes).detail}
        refusal = JSONResponse(detail, 413, headers={"connection": "close"})
        await refusal(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
