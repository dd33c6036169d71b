"""A request as the gateway tracks it, from arrival to its stored answer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from minifal.fleet.request_queue import Priority

if TYPE_CHECKING:
    from minifal.fleet.webhook_policy import WebhookPolicy
    from minifal.runner.log_lines import LogEntry

JobStatus = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]


@dataclass(eq=False)
class Job:
    path: str
    body: bytes
    headers: dict[str, str]
    priority: Priority = "normal"
    start_timeout: float | None = None
    """``X-Fal-Request-Timeout``: seconds the request may wait before a runner starts it."""
    webhook_url: str | None = None
    webhook_policy: WebhookPolicy | None = None
    """Checked the URL at submit; delivery checks it again (``webhook_policy.py``)."""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.time)
    status: JobStatus = "IN_QUEUE"
    queued: bool = False
    """Came in through the queue door (kept in the job store) rather than sync or websocket."""
    attempts: int = 0
    """Attempts started on a runner, those of earlier gateways included (from the store)."""
    foreign: bool = False
    """Read from the store, held by no line of this gateway (another's, or answered before
    this gateway started): its state is the store's."""
    runner_id: str | None = None
    started: float | None = None
    finished: float | None = None
    response_status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    stored_logs: list[LogEntry] = field(default_factory=list)
    """The log lines the job store kept with the answer (a request read from the store); the
    lines of a request this gateway ran are in its ``RequestLogs``."""
    assigned: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def start_deadline(self) -> float | None:
        return None if self.start_timeout is None else self.created + self.start_timeout

    @property
    def inference_time(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    @property
    def succeeded(self) -> bool:
        return self.response_status is not None and 200 <= self.response_status < 300

    @property
    def response_json(self) -> Any:
        """The answer's body as JSON; None when it is empty or not JSON."""
        try:
            return json.loads(self.response_body) if self.response_body else None
        except ValueError:
            return None

    @property
    def error_detail(self) -> Any:
        """fal's ``detail`` of an error answer (a string, or validation errors), else None."""
        payload = self.response_json
        return payload.get("detail") if isinstance(payload, dict) else None

    def notify(self) -> None:
        """Wake status streams; they wait on a fresh event after each change."""
        self.changed.set()
        self.changed = asyncio.Event()

    def start(self, runner_id: str) -> None:
        self.attempts += 1
        self.status = "IN_PROGRESS"
        self.runner_id = runner_id
        self.started = time.time()
        self.notify()

    def requeue(self) -> None:
        """Back in line for another attempt, after the runner it was on failed."""
        self.status = "IN_QUEUE"
        self.runner_id = None
        self.started = None
        self.assigned = asyncio.get_running_loop().create_future()
        self.notify()

    def complete(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        if self.status == "COMPLETED":
            return
        self.status = "COMPLETED"
        self.finished = time.time()
        self.response_status = status
        self.response_body = body
        self.response_headers = headers or {"content-type": "application/json"}
        self.notify()
