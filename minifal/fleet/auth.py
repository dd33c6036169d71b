"""``Authorization: Key <key>`` on every gateway route but ``/health`` and ``/files/``.

A browser cannot send that header when it opens a page: ``/dashboard?key=<key>`` is accepted
too, and the dashboard keeps the key in a same-site, HTTP-only cookie (``minifal_key``) that
counts as the header on every route.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from minifal.host import envs

OPEN_PATHS = ("/health",)
OPEN_PREFIXES = ("/files/",)
KEY_COOKIE = "minifal_key"
KEY_QUERY_PATH = "/dashboard"


def is_loopback_host(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host.strip("[]") == "::1"


def exposure_warning(host: str, port: int, auth_key: str | None) -> str | None:
    """What to say loudly at start when the gateway listens beyond this machine with no key."""
    if auth_key or is_loopback_host(host):
        return None
    return (
        f"listening on {host}:{port} with no auth key: anyone who reaches this port can call "
        "the app, read /runners and open the dashboard. Set one with --auth-key KEY (or "
        f"${envs.AUTH_KEY.name}); callers then send 'Authorization: Key KEY'."
    )


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
        if key_matches(headers.get("authorization"), self.key) or self._browser_key_matches(
            scope, headers.get("cookie")
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "Unauthorized"})
            return
        detail = {"detail": "Unauthorized: send 'Authorization: Key <key>'"}
        await JSONResponse(detail, 401, headers={"www-authenticate": "Key"})(scope, receive, send)

    def _browser_key_matches(self, scope: Scope, cookie_header: str | None) -> bool:
        candidates = []
        if cookie_header:
            try:
                cookie = SimpleCookie(cookie_header)
            except CookieError:
                cookie = SimpleCookie()
            if KEY_COOKIE in cookie:
                candidates.append(cookie[KEY_COOKIE].value)
        if scope["path"] == KEY_QUERY_PATH:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            candidates += query.get("key", [])[:1]
        return any(hmac.compare_digest(c.encode(), self.key.encode()) for c in candidates)

    @staticmethod
    def _is_open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
