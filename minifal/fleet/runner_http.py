"""The gateway's HTTP/1.1 client to its runners: pooled keep-alive connections, lean parsing.

Every call to a runner goes through ``RunnerClient.send`` (``forwarding``'s attempt). It costs a
fraction of a general client's time per request, which on a small machine is most of what the
gateway hop costs (BENCHMARKS.md, section 8):
- one connection pool per runner address; an idle connection is reused for the next request
  (never one older than ``IDLE_SECONDS``, well inside the runner's keep-alive, so the runner never
  closes a connection a request is being written to);
- the request line, headers and body leave in one write; the answer is parsed by httptools (C),
  its body handed on as it arrives, never decoded: a streamed answer (SSE) streams, a sized one
  arrives whole;
- a runner reached by a unix socket (``RunnerAddress.unix_path``) skips the TCP stack.

Only what the gateway needs: no redirects, cookies, TLS, proxies or decompression.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import httptools

IDLE_SECONDS = 20.0
"""An idle connection is reused only this long; the runner keeps it open for longer
(``runner_contract.RUNNER_KEEP_ALIVE_SECONDS``)."""
MAX_IDLE_PER_RUNNER = 64
PAUSE_READING_BYTES = 1 << 20
"""A streamed answer whose reader lags this far behind stops reading from the runner."""


class RunnerConnectionError(ConnectionError):
    """The connection to the runner broke (or never opened) before the answer was complete."""


@dataclass(frozen=True)
class RunnerAddress:
    """Where a runner listens: TCP ``host:port``, and a unix socket when it has one."""

    host: str
    port: int
    unix_path: str | None = None


class RunnerResponse:
    """A runner's answer: status and headers at once, the body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def complete(self) -> bool:
        """The whole body has arrived (``chunks`` will not wait)."""
        return self._complete

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives; raises ``RunnerConnectionError`` if it breaks."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._connection.consumed(self._buffered)
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup

    def body_now(self) -> bytes | None:
        """The whole body if it has all arrived (no waiting), else None."""
        if not self._complete or self._error is not None:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def close(self) -> None:
        """Done with the answer: its connection goes back to the pool, or is closed if the body
        was not read to its end."""
        if not self._closed:
            self._closed = True
            self._connection.finished(self)

    # -- fed by the connection -------------------------------------------------------------------

    def _feed(self, chunk: bytes) -> int:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self._wake()
        return self._buffered

    def _end(self, error: BaseException | None = None) -> None:
        if error is None:
            self._complete = True
        elif not self._complete:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a runner, one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: RunnerResponse | None = None
        self.headers_received: asyncio.Future[RunnerResponse] | None = None
        self.keep_alive = True
        self.broken = False
        self.reading_paused = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._break(RunnerConnectionError(f"bad answer from the runner: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._break(RunnerConnectionError(f"connection to the runner lost: {exc or 'closed'}"))

    def eof_received(self) -> bool | None:
        return False  # close

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.headers_received is not None and not self.headers_received.done():
            self.headers_received.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            buffered = self.response._feed(body)
            if buffered > PAUSE_READING_BYTES and not self.reading_paused and self.transport:
                self.reading_paused = True
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response._end()

    # -- the request -----------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[RunnerResponse]:
        assert self.transport is not None
        self.response = RunnerResponse(self)
        self.headers_received = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.headers_received

    def consumed(self, buffered: int) -> None:
        if self.reading_paused and buffered < PAUSE_READING_BYTES // 2 and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()

    def finished(self, response: RunnerResponse) -> None:
        if response._complete and not self.broken:
            self.pool.give_back(self)
        elif not response._complete:
            self.close()  # the rest of the body would arrive on a connection the next one uses

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return (
            self.keep_alive
            and not self.broken
            and self.transport is not None
            and not self.transport.is_closing()
            and time.monotonic() - self.idle_since < IDLE_SECONDS
        )

    def _break(self, error: RunnerConnectionError) -> None:
        self.broken = True
        if self.headers_received is not None and not self.headers_received.done():
            self.headers_received.set_exception(error)
        if self.response is not None:
            self.response._end(error)


class _Pool:
    """Idle connections to one runner address."""

    def __init__(self, address: RunnerAddress, connect_timeout: float) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self.idle: list[_Connection] = []
        self.host_header = f"{address.host}:{address.port}".encode()

    async def connection(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if connection.reusable:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            if self.address.unix_path:
                connect = loop.create_unix_connection(
                    lambda: _Connection(self), self.address.unix_path
                )
            else:
                connect = loop.create_connection(
                    lambda: _Connection(self), self.address.host, self.address.port
                )
            _, connection = await asyncio.wait_for(connect, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise RunnerConnectionError(f"cannot connect to the runner: {exc!r}") from exc
        return connection

    def give_back(self, connection: _Connection) -> None:
        connection.response = None
        connection.headers_received = None
        connection.idle_since = time.monotonic()
        if connection.reusable and len(self.idle) < MAX_IDLE_PER_RUNNER:
            self.idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


class RunnerClient:
    """HTTP/1.1 requests to runners, over one pool of keep-alive connections per address."""

    def __init__(self, connect_timeout: float = 10.0) -> None:
        self.connect_timeout = connect_timeout
        self._pools: dict[RunnerAddress, _Pool] = {}

    async def send(
        self,
        address: RunnerAddress,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> RunnerResponse:
        """Send one request; return once the answer's status and headers are in.

        The caller reads the body (``chunks``/``read``) and then ``close``s the answer. Raises
        ``RunnerConnectionError`` when the runner cannot be reached or the connection breaks.
        """
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = _Pool(address, self.connect_timeout)
        connection = await pool.connection()
        head = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), b"host: ", pool.host_header]
        head.append(b"\r\ncontent-length: %d\r\n" % len(body))
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        head.append(body)
        try:
            return await connection.send(b"".join(head))
        except BaseException:
            connection.close()  # cancelled or broken: an answer may still come on it
            raise

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
