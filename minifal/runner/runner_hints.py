"""fal's ``App.provide_hints()``: every HTTP answer of a runner says its hints.

An App that overrides ``provide_hints()`` gets ``X-Fal-Runner-Hints: a,b`` on each response (fal's
header; an App that does not override it gets none, an empty list gives an empty header). As on
fal, a hint that cannot be sent in a header (not latin-1) is left out with a warning, and a
``provide_hints()`` that raises is logged and the response goes out without the header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("minifal.runner")

HINTS_HEADER = b"x-fal-runner-hints"


def hints_header(provide_hints: Callable[[], list[str]]) -> bytes | None:
    """The header's value, or None when the App provides no hints (or failed to)."""
    try:
        hints = provide_hints()
    except NotImplementedError:
        return None
    except Exception:
        logger.exception("provide_hints() failed")
        return None
    sendable = []
    for hint in hints:
        try:
            sendable.append(str(hint).encode("latin-1"))
        except UnicodeEncodeError:
            logger.warning("hint %r left out: a header value must be latin-1", hint)
    return b",".join(sendable)


class RunnerHintsMiddleware:
    def __init__(self, app: ASGIApp, provide_hints: Callable[[], list[str]]) -> None:
        self.app = app
        self.provide_hints = provide_hints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_hints(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = hints_header(self.provide_hints)
                if value is not None:
                    headers = [h for h in message.get("headers", []) if h[0] != HINTS_HEADER]
                    message = {**message, "headers": [*headers, (HINTS_HEADER, value)]}
            await send(message)

        await self.app(scope, receive, send_with_hints)
