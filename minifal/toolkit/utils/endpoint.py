"""``fal.toolkit.utils.endpoint``: cancel an endpoint's work when its caller disconnects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import create_task_group
from starlette.requests import Request


@asynccontextmanager
async def cancel_on_disconnect(request: Request) -> AsyncIterator[None]:
    """Run the ``async with`` body; cancel it as soon as the client goes away."""
    async with create_task_group() as group:

        async def watch_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch_disconnect)
        try:
            yield
        finally:
            group.cancel_scope.cancel()


__all__ = ["cancel_on_disconnect"]
