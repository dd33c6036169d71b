"""ASGI middleware giving every request an ``x-fal-request-id`` (kept when the caller sent one)."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minifal.runner_contract import REQUEST_ID_HEADER

HEADER = REQUEST_ID_HEADER.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        request_id = next((value for key, value in headers if key == HEADER), None)
        if request_id is None:
            request_id = str(uuid.uuid4()).encode()
            headers.append((HEADER, request_id))
            scope = {**scope, "headers": headers}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = [h for h in message.get("headers", []) if h[0] != HEADER]
                response_headers.append((HEADER, request_id))
                message = {**message, "headers": response_headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
