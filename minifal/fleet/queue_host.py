"""fal serves queue requests on their own host (``queue.fal.run``); so can minifal."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class QueueHostMiddleware:
    """Requests to a ``queue.`` host are queue requests, as on fal (``queue.fal.run``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/queue/"):
            host = next((v for k, v in scope["headers"] if k == b"host"), b"")
            if host.startswith(b"queue."):
                scope = {**scope, "path": "/queue" + scope["path"]}
        await self.app(scope, receive, send)
