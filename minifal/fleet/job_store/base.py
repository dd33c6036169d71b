"""The job store's seam: what is stored of a queue request, and what a store must do."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from minifal.fleet.jobs import Job, JobStatus
from minifal.runner.log_lines import LogEntry

WebhookState = Literal["none", "pending", "done"]
"""``pending``: the request has a webhook not yet delivered (nor given up on)."""


class StoreUnavailable(Exception):
    """The store could not take the write (disk full, Redis down): the caller gets 503."""


class StoreBusy(StoreUnavailable):
    """A store for one gateway that another live gateway holds (SQLite's lock)."""


@dataclass
class StoredRequest:
    """A queue request as a store keeps it: the request, its progress and its answer."""

    id: str
    path: str
    body: bytes
    headers: dict[str, str]
    priority: str
    start_timeout: float | None
    webhook_url: str | None
    created: float
    status: JobStatus = "IN_QUEUE"
    attempts: int = 0
    """Attempts started on a runner, across every gateway that ran the request."""
    runner_id: str | None = None
    started: float | None = None
    finished: float | None = None
    result_status: int | None = None
    result_headers: dict[str, str] = field(default_factory=dict)
    result_body: bytes = b""
    webhook_state: WebhookState = "none"
    logs: list[LogEntry] = field(default_factory=list)
    """The request's log lines, stored with its answer (as ``RequestLogs`` bounded them)."""

    @property
    def size(self) -> int:
        """Bytes it holds that count against retention (bodies, results, log lines)."""
        return len(self.body) + len(self.result_body) + len(encode_logs(self.logs)) + 512


def encode_logs(entries: Sequence[LogEntry]) -> bytes:
    """A request's lines as a store keeps them: a JSON list of [message, level, time, prefix,
    source] (the request's id is the record's); no lines, no bytes. UTF-8; a character that
    has none (a lone surrogate from bytes an app printed) is stored as ``?``."""
    if not entries:
        return b""
    rows = [[e.message, e.level, e.timestamp, e.prefix, e.source] for e in entries]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode(errors="replace")


def decode_logs(request_id: str, data: bytes) -> list[LogEntry]:
    """``encode_logs``'s lines, for the record of ``request_id``."""
    return [LogEntry(request_id, *row) for row in json.loads(data)] if data else []


@dataclass(frozen=True)
class StoreSize:
    requests: int
    bytes: int
    """Bytes on disk (SQLite: database, WAL and body files) or in memory (Redis, memory)."""


class JobStore(Protocol):
    """A journal of queue requests. Writes keep their order; ``accept`` and ``complete`` are
    durable (as the store's configuration defines it) when they return, the others are sent
    in order without waiting."""

    durable: bool
    """Survives the gateway's process: queued requests may stay queued across a restart."""
    shared: bool
    """Several gateways may use it at once (claims with leases, takeover of orphans)."""

    async def open(self) -> None: ...

    async def close(self) -> None:
        """Flush what was sent, then release the store (and this gateway's claims' lease)."""

    async def accept(self, request: StoredRequest) -> None:
        """Store a new request (raises ``StoreUnavailable``); claimed by this gateway."""

    def started(self, request_id: str, attempts: int, runner_id: str, at: float) -> None: ...

    def requeued(self, request_id: str) -> None: ...

    async def complete(
        self,
        request_id: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        finished: float,
        logs: Sequence[LogEntry] = (),
    ) -> bool:
        """Store the answer and the request's log lines, in one write; False when the request
        had an answer already (the first one stands, with its lines)."""

    def webhook_done(self, request_id: str) -> None: ...

    async def get(self, request_id: str) -> StoredRequest | None: ...

    async def take_over(self) -> list[StoredRequest]:
        """Requests no live gateway holds (unanswered, or answered with a webhook to send),
        now claimed by this one, oldest first."""

    async def prune(self, now: float) -> int:
        """Forget answered requests past retention; how many were forgotten."""

    async def size(self) -> StoreSize: ...


def stored_request(job: Job) -> StoredRequest:
    """What a store keeps of a queue request the gateway just accepted."""
    return StoredRequest(
        id=job.id,
        path=job.path,
        body=job.body,
        headers=job.headers,
        priority=job.priority,
        start_timeout=job.start_timeout,
        webhook_url=job.webhook_url,
        created=job.created,
        webhook_state="pending" if job.webhook_url else "none",
    )


def job_from(stored: StoredRequest) -> Job:
    """The gateway's job for a stored request (its answer too, when it has one)."""
    job = Job(
        stored.path,
        stored.body,
        stored.headers,
        "low" if stored.priority == "low" else "normal",
        stored.start_timeout,
        stored.webhook_url,
        id=stored.id,
        created=stored.created,
        status=stored.status,
        queued=True,
        attempts=stored.attempts,
        runner_id=stored.runner_id,
        started=stored.started,
        finished=stored.finished,
    )
    if stored.status == "COMPLETED":
        job.response_status = stored.result_status
        job.response_headers = stored.result_headers
        job.response_body = stored.result_body
        job.stored_logs = stored.logs
    return job
