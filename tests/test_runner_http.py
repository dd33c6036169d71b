"""The gateway's client to its runners, against real servers on loopback and on a unix socket:
sized and streamed answers, connections reused, a broken connection reported."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from minifal.fleet.runner_http import RunnerAddress, RunnerClient, RunnerConnectionError

pytestmark = pytest.mark.process

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler, unix_path: Path | None = None) -> tuple[asyncio.Server, list]:
    """A server that reads each request's head and body and lets ``handler`` answer it; it
    records (connection number, request head) for every request."""
    seen: list[tuple[int, bytes]] = []
    connections = 0

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            seen.append((number, head))
            await handler(body, writer)
        writer.close()

    if unix_path is not None:
        server = await asyncio.start_unix_server(on_connection, str(unix_path))
    else:
        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    return server, seen


async def echo(body: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    await writer.drain()


def address_of(server: asyncio.Server) -> RunnerAddress:
    return RunnerAddress("127.0.0.1", server.sockets[0].getsockname()[1])


def test_sized_answers_reuse_one_connection() -> None:
    async def scenario() -> None:
        server, seen = await serve(echo)
        client = RunnerClient()
        async with server:
            for text in (b"one", b"two"):
                answer = await client.send(
                    address_of(server), "POST", "/x", [("x-test", "1")], text
                )
                assert answer.status == 200
                assert answer.header(b"content-type") == b"text/plain"
                assert await answer.read() == text
                answer.close()
            await client.aclose()
        assert [number for number, _ in seen] == [1, 1]
        assert b"POST /x HTTP/1.1\r\n" in seen[0][1] and b"x-test: 1\r\n" in seen[0][1]

    asyncio.run(scenario())


def test_a_streamed_answer_arrives_chunk_by_chunk() -> None:
    async def stream(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for index in range(3):
            event = b"data: %d\n\n" % index
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        server, _ = await serve(stream)
        client = RunnerClient()
        async with server:
            answer = await client.send(address_of(server), "POST", "/", [], b"")
            chunks = [chunk async for chunk in answer.chunks()]
            answer.close()
            await client.aclose()
        assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"

    asyncio.run(scenario())


def test_a_connection_that_breaks_mid_answer_is_an_error() -> None:
    async def half(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, _ = await serve(half)
        client = RunnerClient()
        async with server:
            answer = await client.send(address_of(server), "POST", "/", [], b"")
            with pytest.raises(RunnerConnectionError):
                await answer.read()
            answer.close()
            with pytest.raises(RunnerConnectionError):
                await client.send(RunnerAddress("127.0.0.1", 1), "POST", "/", [], b"")
            await client.aclose()

    asyncio.run(scenario())


def test_a_unix_socket_is_used_when_the_runner_has_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "runner.sock"
        server, seen = await serve(echo, path)
        client = RunnerClient()
        async with server:
            # The port is never used: nothing listens on it.
            answer = await client.send(
                RunnerAddress("127.0.0.1", 1, str(path)), "POST", "/", [], b"hi"
            )
            assert await answer.read() == b"hi"
            answer.close()
            await client.aclose()
        assert len(seen) == 1

    asyncio.run(scenario())
