"""``Authorization: Key <key>`` on every gateway route but ``/health`` and ``/files/``."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

ENV_AUTH_KEY = "MINIFAL_AUTH_KEY"
"""The key, when ``minifal run`` and ``minifal runners`` are given no ``--auth-key``."""
OPEN_PATHS = ("/health",)
OPEN_PREFIXES = ("/files/",)


def key_matches(header: str | None, key: str) -> bool:
    if not header:
        return False
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() not in ("key", "bearer"):
        return False
    return hmac.compare_digest(credentials.strip().encode(), key.encode())


class KeyAuthMiddleware:
    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if key_matches(headers.get("authorization"), self.key):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "Unauthorized"})
            return
        body = json.dumps({"detail": "Unauthorized: send 'Authorization: Key <key>'"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Key"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _is_open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
