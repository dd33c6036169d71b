"""Pass a client's websocket through to a runner, frame for frame, both ways."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from minifal.runner_contract import ENDPOINT_HEADER, REQUEST_ID_HEADER

FORWARDED_HEADERS = (REQUEST_ID_HEADER, ENDPOINT_HEADER)


async def proxy_websocket(client: WebSocket, target_url: str, headers: dict[str, str]) -> None:
    extra = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
    async with connect(target_url, additional_headers=extra, max_size=None) as upstream:
        await client.accept()

        async def client_to_runner() -> None:
            while True:
                message = await client.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await upstream.send(message["bytes"])
                elif message.get("text") is not None:
                    await upstream.send(message["text"])

        async def runner_to_client() -> None:
            async for message in upstream:
                if isinstance(message, bytes):
                    await client.send_bytes(message)
                else:
                    await client.send_text(message)

        tasks = [
            asyncio.create_task(client_to_runner()),
            asyncio.create_task(runner_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError, ConnectionClosed, WebSocketDisconnect
                ):
                    await task
    with contextlib.suppress(RuntimeError):
        await client.close()
