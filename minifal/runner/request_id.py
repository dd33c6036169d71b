"""ASGI middleware giving every request an ``x-fal-request-id`` (kept when the caller sent one).

With ``lines`` (a runner behind a gateway), the request's id is bound to the context its log
lines are tagged from (``request_logs``) for as long as it runs, and its answer says how many
lines it wrote before answering (``LOG_LINES_HEADER``, for the gateway only).
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minifal.runner.request_logs import RequestLines
from minifal.runner_contract import LOG_LINES_HEADER, REQUEST_ID_HEADER

HEADER = REQUEST_ID_HEADER.encode()
LOG_LINES = LOG_LINES_HEADER.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, lines: RequestLines | None = None) -> None:
        self.app = app
        self.lines = lines

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
        lines = self.lines
        text_id = request_id.decode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = [h for h in message.get("headers", []) if h[0] != HEADER]
                response_headers.append((HEADER, request_id))
                if lines is not None and (written := lines.written(text_id)):
                    response_headers.append((LOG_LINES, str(written).encode()))
                message = {**message, "headers": response_headers}
            await send(message)

        if lines is None:
            await self.app(scope, receive, send_with_id)
            return
        token = lines.bind(text_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            lines.finish(text_id, token)
