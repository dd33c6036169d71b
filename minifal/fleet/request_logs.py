"""Each request's log lines, kept by the gateway: what ``status?logs=1`` returns, what
``status/stream`` sends as they come, and what ``GET /requests/ID/logs`` gives for any request
(a sync one too, by the ``x-fal-request-id`` of its answer).

Runners send their requests' lines marked on their output (``runner/log_lines.py``); the runner
backend hands each to ``add``. Only lines of requests the gateway ``track``s are kept (others,
a health check's, are in the runner's log only), within bounds:
- per request, the first ``max_lines`` lines and ``max_bytes`` bytes of messages; past either
  one line says so, and the rest is in the runner's log (``DATA_DIR/runs/<run>/<runner>.log``);
- all requests together, ``max_total_bytes``, and the last ``max_requests`` requests: past
  either the oldest requests' lines are dropped first. A request the gateway forgets (its
  result dropped) has its lines dropped with it (``forget``).

``logs_for(request_id)`` is the seam for a store that keeps a request's lines with its result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field

from minifal.runner.log_lines import LogEntry

DEFAULT_MAX_LINES = 2_000
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_TOTAL_BYTES = 64 << 20
DEFAULT_MAX_REQUESTS = 10_000
"""As many as the gateway keeps answered queue requests (``gateway.COMPLETED_JOBS_KEPT``)."""
SETTLE_TIMEOUT_SECONDS = 2.0
"""How long a finished request waits for the lines its runner wrote before answering."""
ENTRY_OVERHEAD_BYTES = 64
"""What one entry costs beyond its message's bytes, in the bounds' arithmetic."""
CUT_MESSAGE = (
    "[minifal] this request's log is over its limit ({limit}); "
    "its further lines are in the runner's log"
)


@dataclass
class RequestLog:
    entries: list[LogEntry] = field(default_factory=list)
    bytes: int = 0
    cut: bool = False
    received: dict[str, int] = field(default_factory=dict)
    """Lines received per runner, kept or not (``settle`` compares them)."""
    changed: asyncio.Event | None = None
    """Set when a line arrives, for whoever waits (made on demand)."""


class RequestLogs:
    def __init__(
        self,
        max_lines: int = DEFAULT_MAX_LINES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        max_requests: int = DEFAULT_MAX_REQUESTS,
    ) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self.max_requests = max_requests
        self.total_bytes = 0
        self._logs: OrderedDict[str, RequestLog] = OrderedDict()

    # -- which requests ----------------------------------------------------------------------------

    def track(self, request_id: str) -> None:
        """Keep ``request_id``'s lines from now on (again, for a retry: its lines stay)."""
        if request_id not in self._logs:
            self._logs[request_id] = RequestLog()
            while len(self._logs) > self.max_requests:
                self._drop_oldest()

    def forget(self, request_id: str) -> None:
        log = self._logs.pop(request_id, None)
        if log is not None:
            self.total_bytes -= log.bytes

    def _drop_oldest(self) -> None:
        _, log = self._logs.popitem(last=False)
        self.total_bytes -= log.bytes

    # -- lines -------------------------------------------------------------------------------------

    def add(self, runner_id: str, entry: LogEntry) -> None:
        """A line from ``runner_id``'s output (the runner backend calls this)."""
        log = self._logs.get(entry.request_id)
        if log is None:
            return
        log.received[runner_id] = log.received.get(runner_id, 0) + 1
        if log.changed is not None:
            log.changed.set()
            log.changed = None
        if log.cut:
            return
        size = len(entry.message.encode()) + ENTRY_OVERHEAD_BYTES
        if len(log.entries) >= self.max_lines or log.bytes + size > self.max_bytes:
            log.cut = True
            limit = f"{self.max_lines} lines, {self.max_bytes} bytes"
            entry = LogEntry(
                entry.request_id, CUT_MESSAGE.format(limit=limit), "WARNING", entry.timestamp
            )
            size = len(entry.message) + ENTRY_OVERHEAD_BYTES
        log.entries.append(entry)
        log.bytes += size
        self.total_bytes += size
        while self.total_bytes > self.max_total_bytes and self._logs:
            self._drop_oldest()

    def logs_for(self, request_id: str) -> list[LogEntry]:
        """The request's lines kept so far (empty for an unknown request)."""
        log = self._logs.get(request_id)
        return list(log.entries) if log is not None else []

    def knows(self, request_id: str) -> bool:
        return request_id in self._logs

    def fal_logs(self, request_id: str, start: int = 0) -> list[dict[str, object]]:
        """fal's ``logs`` field: the request's lines from the ``start``-th on."""
        log = self._logs.get(request_id)
        if log is None:
            return []
        return [entry.as_fal() for entry in log.entries[start:]]

    # -- waiting for lines -------------------------------------------------------------------------

    def _changed(self, request_id: str) -> asyncio.Event | None:
        log = self._logs.get(request_id)
        if log is None:
            return None
        if log.changed is None:
            log.changed = asyncio.Event()
        return log.changed

    async def wait(self, changed: asyncio.Event, request_id: str | None, timeout: float) -> None:
        """Until ``changed`` is set or (with a ``request_id``) a line of it arrives, at most
        ``timeout`` seconds (a status stream's wait)."""
        waits = {asyncio.ensure_future(changed.wait())}
        line_came = self._changed(request_id) if request_id is not None else None
        if line_came is not None:  # made now: a line that comes before the wait starts counts
            waits.add(asyncio.ensure_future(line_came.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def wait_for_line(self, request_id: str, timeout: float) -> None:
        """Until a line of ``request_id`` arrives, at most ``timeout`` seconds."""
        changed = self._changed(request_id)
        if changed is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    async def settle(
        self, request_id: str, runner_id: str, written: int, timeout: float = SETTLE_TIMEOUT_SECONDS
    ) -> bool:
        """Until ``written`` lines of the request came from ``runner_id`` (what its answer's
        ``LOG_LINES_HEADER`` said), at most ``timeout`` seconds; False if they did not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            log = self._logs.get(request_id)
            if log is None or log.received.get(runner_id, 0) >= written:
                return log is not None
            left = deadline - loop.time()
            if left <= 0:
                return False
            await self.wait_for_line(request_id, left)
