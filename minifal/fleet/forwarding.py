"""One path from a caller to a runner and back, whichever door the request came in.

  sync       POST /<app-path>        accept -> call_sync: acquire -> attempt (streamed back)
                                     -> release
  queue      POST /queue/<app-path>  accept -> store -> run_queued: acquire -> attempt ->
                                     release, again on another runner while the failure is
                                     worth a retry -> the answer stored -> webhook
             GET .../requests/ID[/status[/stream]], PUT .../cancel: this gateway's job, or
                                     the job store's record (another gateway's, or older)
  websocket  WS /<app-path>          open_websocket: acquire -> frames both ways -> release

(It is long because it holds every door whole, the queue's included, so that a request's
path reads in one file; the pieces it calls, the scheduler, the runner client, the job store
and the webhooks, are modules of their own.)

- acquire and release: ``async with Slot(scheduler, job) as runner``, the same for every door.
- acquire: the job waits in the scheduler's line for a ready runner with a free slot, at most its
  ``X-Fal-Request-Timeout`` (then 504, ``x-fal-request-timeout-type: user``).
- attempt: one POST to the runner (``runner_http``: a pooled keep-alive connection, the body
  passed through as bytes, never decoded). It ends one of three ways: the runner answered (any
  status); the answer took longer than the App's ``request_timeout`` (the runner is replaced,
  504); the connection broke (the supervisor hears of it, 503).
- retry (queue only, as fal does): after a 503, a 504 or a lost connection, another runner, up to
  ``MAX_ATTEMPTS`` in all; never after a 4xx. A sync caller gets the first answer.
- release: the runner's slot is free for the next job; the answer is counted in the metrics.
- store (queue only): the request is in the job store before its caller gets an id, and its
  answer before anyone reads it (``job_store``; docs/queue.md).

The caller gets the runner's status, body and headers, less hop-by-hop ones and the runner's own
``date`` and ``server`` (the gateway's server sets its own): each header once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from minifal.billing import BILLABLE_UNITS_HEADER
from minifal.fleet.job_store.base import (
    JobStore,
    StoredRequest,
    StoreUnavailable,
    job_from,
    stored_request,
)
from minifal.fleet.job_store.memory import MemoryJobStore
from minifal.fleet.job_store.rules import resume_plan
from minifal.fleet.jobs import Job
from minifal.fleet.metrics import GatewayMetrics
from minifal.fleet.queue_protocol import queue_urls, status_body, status_code
from minifal.fleet.request_logs import RequestLogs
from minifal.fleet.request_queue import PRIORITIES, QueueFull
from minifal.fleet.runner import Runner
from minifal.fleet.runner_http import RunnerClient, RunnerConnectionError, RunnerResponse
from minifal.fleet.scheduler import Scheduler, ShuttingDown, StartTimeout, Withdrawn
from minifal.fleet.supervisor import Supervisor
from minifal.fleet.webhook_policy import WebhookPolicy, WebhookRefused
from minifal.fleet.webhooks import deliver_webhook
from minifal.fleet.websocket_proxy import proxy_websocket
from minifal.runner.app_manifest import AppManifest
from minifal.runner_contract import ENDPOINT_HEADER, LOG_LINES_HEADER, REQUEST_ID_HEADER

logger = logging.getLogger("minifal.fleet")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    }
)
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "authorization", "expect"}
NOT_ANSWERED = HOP_BY_HOP | {"date", "server", LOG_LINES_HEADER}
"""Not passed back to the caller: the gateway's server sets its own ``date`` and ``server``;
the runner's count of log lines is the gateway's (``request_logs``)."""
NOT_ANSWERED_RAW = frozenset(name.encode() for name in NOT_ANSWERED)
BILLABLE_UNITS_RAW = BILLABLE_UNITS_HEADER.encode()
LOG_LINES_RAW = LOG_LINES_HEADER.encode()
DEFAULT_START_TIMEOUT_SECONDS = 1800.0
"""A request without ``X-Fal-Request-Timeout`` waits at most this long for a runner."""
MAX_ATTEMPTS = 10  # fal retries queue requests up to 10 times on 503, 504 and lost connections
RETRYABLE_STATUSES = frozenset({503, 504})
RUNNER_FAILED = "The runner serving this request failed"
CANCELLED = "Request cancelled by the client."
CANCEL_TIMEOUT_SECONDS = 5.0
COMPLETED_JOBS_KEPT = 10_000
"""Answered queue requests kept in memory with the memory store (nothing else has them)."""
COMPLETED_JOBS_CACHED = 1_000
"""... with a durable store, which has them all until retention: a cache of the last ones."""
QUEUE_STATUS_INTERVAL = 1.0
"""A status stream looks again this often: queue positions move without an event of its job."""

Spawn = Callable[..., "asyncio.Task[Any]"]
"""``spawn(coroutine, name=...)``: starts a task its owner drains and stops."""


def json_body(data: Any) -> bytes:
    return json.dumps(data).encode()


def json_error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status, dict(headers or {}))


def queue_full(exc: QueueFull) -> Response:
    return json_error(429, str(exc), {"retry-after": "1"})


def resolve_endpoint(rest: str, app_name: str) -> tuple[str, str]:
    """``owner/app/x`` -> (``/x``, owner); a bare endpoint path -> (path, ``local``)."""
    parts = [part for part in rest.split("/") if part]
    if len(parts) >= 2 and parts[1] == app_name:
        return "/" + "/".join(parts[2:]), parts[0]
    return "/" + "/".join(parts), "local"


def forward_headers(job: Job, incoming: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers, less hop-by-hop ones and its key, plus the request's identity."""
    headers = {k: v for k, v in incoming.items() if k.lower() not in NOT_FORWARDED}
    headers[REQUEST_ID_HEADER] = job.id
    headers[ENDPOINT_HEADER] = job.path
    return headers


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers the runner's ``Connection`` header names: hop-by-hop too (RFC 9110, 7.6.1)."""
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    )


def answer_headers_raw(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A runner's answer headers (lower-case names) as the caller gets them."""
    dropped = NOT_ANSWERED_RAW | connection_tokens(headers)
    return [(name, value) for name, value in headers if name not in dropped]


def answer_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The same, as the text a queue request's result is stored with."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in answer_headers_raw(headers)
    }


class ProxiedAnswer(Response):
    """A runner's answer passed to the caller as it comes: status, headers, the body's bytes.

    A sized answer is sent as it arrives (usually whole, in one message); an unsized one (SSE)
    is streamed until it ends or the caller goes away, whichever is first. ``done`` runs once
    the answer is over either way.
    """

    def __init__(self, upstream: RunnerResponse, done: Callable[[], None]) -> None:
        self.upstream = upstream
        self.done = done
        self.status_code = upstream.status
        self.raw_headers = answer_headers_raw(upstream.headers)
        self.background = None
        self._done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upstream = self.upstream
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        try:
            body = upstream.body_now()
            if body is not None:
                self._finished()  # the runner's part is over: its slot goes to the next job now
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(start)
            if upstream.header(b"content-length") is not None:
                await self._pass_body(send)
            else:
                await self._stream_until_disconnect(receive, send)
        finally:
            self._finished()

    def _finished(self) -> None:
        if not self._done:
            self._done = True
            self.upstream.close()
            self.done()

    async def _pass_body(self, send: Send) -> None:
        async for chunk in self.upstream.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _stream_until_disconnect(self, receive: Receive, send: Send) -> None:
        async def caller_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        streaming = asyncio.ensure_future(self._pass_body(send))
        watching = asyncio.ensure_future(caller_gone())
        try:
            await asyncio.wait((streaming, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not streaming.done():
                streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streaming  # its error (a broken stream) is the caller's error


@dataclass(frozen=True)
class Failure:
    """An attempt that got no answer from the runner, as the caller sees it if it is the last."""

    status: int
    detail: str


@dataclass(frozen=True)
class Answer:
    """A runner's whole answer (a queue request's)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def log_lines(answer: Answer) -> int:
    """How many log lines the runner wrote for the request before answering."""
    value = next((v for name, v in answer.headers if name == LOG_LINES_RAW), b"0")
    return int(value) if value.isdigit() else 0


def worth_retrying(status: int, attempt: int) -> bool:
    """Whether a queue request answered ``status`` on attempt ``attempt`` (1-based) goes to
    another runner: 503 and 504 (lost connections and timeouts included), attempts left."""
    return status in RETRYABLE_STATUSES and attempt < MAX_ATTEMPTS


class Slot:
    """One runner slot for one job, whichever door it came in: ``async with Slot(...) as runner``.

    Entering waits for the job's turn (``StartTimeout``, ``ShuttingDown``, ``Withdrawn`` when it
    never comes); a caller cancelled while waiting takes its job out of line. Leaving releases
    the slot, unless ``hand_off()`` gave the release to an answer that is still streaming.
    """

    def __init__(self, scheduler: Scheduler, job: Job) -> None:
        self.scheduler = scheduler
        self.job = job
        self.runner: Runner | None = None
        self._handed_off = False
        self._released = False

    async def __aenter__(self) -> Runner:
        try:
            self.runner = await self.scheduler.wait_for_runner(self.job)
        except asyncio.CancelledError:
            self.scheduler.withdraw(self.job)
            raise
        return self.runner

    async def __aexit__(self, *_: object) -> None:
        if not self._handed_off:
            self.release()

    def hand_off(self) -> Callable[[], None]:
        """The release, for whoever holds the runner past this block (a streamed answer)."""
        self._handed_off = True
        return self.release

    def release(self) -> None:
        """Free the slot for the next job (once, whoever calls first)."""
        if self.runner is not None and not self._released:
            self._released = True
            self.scheduler.release(self.runner)


class Forwarder:
    def __init__(
        self,
        manifest: AppManifest,
        scheduler: Scheduler,
        supervisor: Supervisor,
        metrics: GatewayMetrics,
        runners: RunnerClient,
        client: httpx.AsyncClient,
        *,
        webhook_policy: WebhookPolicy | None = None,
        spawn: Spawn | None = None,
        store: JobStore | None = None,
        request_logs: RequestLogs | None = None,
    ) -> None:
        self.manifest = manifest
        self.request_logs = request_logs or RequestLogs()
        """Each request's log lines (``status?logs=1``)."""
        self.scheduler = scheduler
        self.supervisor = supervisor
        self.metrics = metrics
        self.runners = runners
        """Requests to runners (the hot path)."""
        self.client = client
        """Everything else: cancel requests, webhooks."""
        self.request_timeout = manifest.settings.request_timeout
        self.start_timeout = (
            manifest.settings.request_start_timeout or DEFAULT_START_TIMEOUT_SECONDS
        )
        self.webhook_policy = webhook_policy or WebhookPolicy()
        self.spawn: Spawn = spawn or asyncio.create_task  # type: ignore[assignment]
        """Starts a queue request's task; the gateway's own ``spawn`` owns and drains them."""
        self.store: JobStore = store or MemoryJobStore()
        """The queue's journal (``job_store``): requests, progress, answers, webhooks."""
        self.jobs: dict[str, Job] = {}
        """Queue requests by id: those in line or running, and the last answered ones."""

    # -- the request ----------------------------------------------------------------------------

    async def accept(self, request: Request, rest: str) -> tuple[Job, str] | Response:
        """The job for an HTTP call to ``rest`` (fal's app path) and its owner, or the error."""
        path, owner = resolve_endpoint(rest, self.manifest.app_name)
        if self.manifest.endpoint_kind(path) != "http":
            return json_error(404, f"Path {path} not found")
        priority = request.headers.get("x-fal-queue-priority", "normal").lower()
        if priority not in PRIORITIES:
            return json_error(422, f"X-Fal-Queue-Priority must be one of {list(PRIORITIES)}")
        timeout_header = request.headers.get("x-fal-request-timeout")
        try:
            start_timeout = float(timeout_header) if timeout_header else self.start_timeout
        except ValueError:
            return json_error(422, "X-Fal-Request-Timeout must be seconds")
        job = Job(path, await request.body(), {}, priority, start_timeout)  # type: ignore[arg-type]
        job.headers = forward_headers(job, request.headers)
        job.headers["x-forwarded-host"] = request.headers.get("host", "")
        job.headers["x-forwarded-proto"] = request.scope.get("scheme", "http")
        self.metrics.requests_received.inc()
        return job, owner

    # -- the three doors ------------------------------------------------------------------------

    async def call_sync(self, job: Job) -> Response:
        """Wait for a runner slot, then stream the runner's answer back as it comes (SSE too)."""
        try:
            self.scheduler.submit(job)
        except QueueFull as exc:
            return queue_full(exc)
        slot = Slot(self.scheduler, job)
        try:
            async with slot as runner:
                try:
                    outcome = await self._attempt(job, runner, stream=True)
                except BaseException:
                    slot.release()
                    self.metrics.completed(499, time.time() - job.created)
                    raise
                if isinstance(outcome, Failure):
                    slot.release()
                    self.metrics.completed(outcome.status, time.time() - job.created)
                    detail = json_body({"detail": outcome.detail})
                    return Response(detail, outcome.status, media_type="application/json")
                return ProxiedAnswer(outcome, self._answered_sync(job, outcome, slot.hand_off()))
        except StartTimeout:
            await self._complete_start_timeout(job)
            return Response(job.response_body, 504, job.response_headers)
        except ShuttingDown:
            await self._complete_shutting_down(job)
            return Response(job.response_body, 503, job.response_headers)

    def _answered_sync(
        self, job: Job, upstream: RunnerResponse, release: Callable[[], None]
    ) -> Callable[[], None]:
        """What runs once a sync answer is over: the slot is released and the answer counted."""

        def done() -> None:
            release()
            self.metrics.completed(upstream.status, time.time() - job.created)
            inference = time.time() - job.started if job.started else None
            units = upstream.header(BILLABLE_UNITS_RAW)
            billed = {} if units is None else {BILLABLE_UNITS_HEADER: units.decode("latin-1")}
            self.metrics.answered(job.path, upstream.status, billed, inference)

        return done

    # -- the queue door ------------------------------------------------------------------------

    async def submit_queued(self, request: Request, rest: str) -> Response:
        """``POST /queue/<app-path>``: once the job store has the request, it joins the line and
        runs in its own task; the caller gets its id and URLs. A store that cannot take it: 503."""
        webhook_url = request.query_params.get("fal_webhook") or None
        if webhook_url is not None:
            try:
                await asyncio.to_thread(self.webhook_policy.check, webhook_url)  # resolves
            except WebhookRefused as exc:
                return json_error(400, str(exc))
        accepted = await self.accept(request, rest)
        if isinstance(accepted, Response):
            return accepted
        job, owner = accepted
        job.webhook_url, job.webhook_policy, job.queued = webhook_url, self.webhook_policy, True
        if self.scheduler.queue.full:
            return queue_full(QueueFull(f"the queue is full ({self.scheduler.queue.max_size})"))
        try:
            await self.store.accept(stored_request(job))
        except StoreUnavailable as exc:
            logger.error("queue request refused: %s", exc)
            return json_error(503, "The queue cannot take requests now", {"retry-after": "1"})
        self._run_queued(job)
        base_url = f"{request.url.scheme}://{request.headers['host']}"
        body = {**queue_urls(base_url, owner, self.manifest.app_name, job), "status": "IN_QUEUE"}
        body["queue_position"] = self.scheduler.position(job) or 0
        return JSONResponse(body, 200, {REQUEST_ID_HEADER: job.id})

    def _run_queued(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._forget_old_jobs()
        self.scheduler.submit(job, over_limit=True)  # accepted: the store has it
        self.spawn(self.run_queued(job), name=f"job-{job.id}")

    def resume(self, requests: list[StoredRequest]) -> None:
        """Take up requests an earlier (or another, gone) gateway accepted and left: those
        waiting or cut off on a runner run (again), those answered get their webhook."""
        for stored in requests:
            plan = resume_plan(stored, MAX_ATTEMPTS)
            if plan == "nothing" or (stored.id in self.jobs and not self.jobs[stored.id].foreign):
                continue
            job = job_from(stored)
            job.webhook_policy = self.webhook_policy
            if plan == "run":
                if job.status == "IN_PROGRESS":
                    job.status, job.runner_id, job.started = "IN_QUEUE", None, None
                    self.store.requeued(job.id)
                self._run_queued(job)
            elif plan == "fail":
                self.jobs[job.id] = job
                self.spawn(self._fail_lost(job), name=f"job-{job.id}")
            else:
                self.jobs[job.id] = job
                self.spawn(self._deliver_webhook(job), name=f"webhook-{job.id}")
        if requests:
            logger.info("queue: took up %d request(s) from the job store", len(requests))

    async def find(self, request_id: str) -> Job | Response:
        """A queue request by id (this gateway's, else the store's), or the answer to give."""
        job = self.jobs.get(request_id)
        if job is not None and not job.foreign:
            return job
        try:
            stored = await self.store.get(request_id)
        except StoreUnavailable as exc:
            logger.error("queue store: %s", exc)
            return json_error(503, "The queue store cannot answer now", {"retry-after": "1"})
        if stored is None:
            return json_error(404, "Request not found")
        job = job_from(stored)
        job.foreign = True
        if job.status == "COMPLETED":  # an answer never changes: keep it at hand
            self.jobs[job.id] = job
            self._forget_old_jobs()
        return job

    def _logs(self, job: Job, with_logs: bool, start: int = 0) -> list[dict[str, object]] | None:
        """fal's ``logs`` of a status (``?logs=1``): the request's lines from ``start``; this
        gateway's while it has them, else those the store kept with the answer (a request
        answered before a restart, or by another gateway)."""
        if not with_logs:
            return None
        if self.request_logs.knows(job.id):
            return self.request_logs.fal_logs(job.id, start)
        return [entry.as_fal() for entry in job.stored_logs[start:]]

    def status(self, job: Job, with_logs: bool) -> Response:
        body = status_body(job, self.scheduler.position(job), self._logs(job, with_logs))
        return JSONResponse(body, status_code(job))

    def status_stream(self, job: Job, with_logs: bool) -> Response:
        """Server-sent status events until the request is answered (another gateway's request:
        read from the store every ``QUEUE_STATUS_INTERVAL``)."""

        async def events() -> AsyncIterator[bytes]:
            current, last = job, None
            logs_sent = 0  # as fal's stream does, each event has the log lines not sent yet
            while True:
                logs = self._logs(current, with_logs, logs_sent)
                body = status_body(current, self.scheduler.position(current), logs)
                state = {key: value for key, value in body.items() if key != "logs"}
                if state != last or logs:
                    last = state
                    logs_sent += len(logs or ())
                    yield f"data: {json.dumps(body)}\n\n".encode()
                if current.status == "COMPLETED":
                    return
                # Queue positions move without an event of this job: look again every second.
                watched = current.id if with_logs else None
                await self.request_logs.wait(current.changed, watched, QUEUE_STATUS_INTERVAL)
                if current.foreign:
                    found = await self.find(current.id)
                    if isinstance(found, Job):
                        current = found

        return StreamingResponse(events(), media_type="text/event-stream")

    def result(self, job: Job) -> Response:
        if job.status != "COMPLETED":
            return json_error(400, "Request is still in progress")
        headers = {REQUEST_ID_HEADER: job.id, **job.response_headers}
        return Response(job.response_body, job.response_status or 500, headers)

    def _forget_old_jobs(self) -> None:
        kept = COMPLETED_JOBS_CACHED if self.store.durable else COMPLETED_JOBS_KEPT
        if len(self.jobs) <= kept:
            return
        answered = [j.id for j in self.jobs.values() if j.status == "COMPLETED"]
        for job_id in answered[: kept // 10]:  # the oldest tenth, so that this runs seldom
            del self.jobs[job_id]
            self.request_logs.forget(job_id)

    async def run_queued(self, job: Job) -> None:
        """Run a queue request until it has an answer, then call its webhook if it has one.
        With a durable store, a request still waiting when the gateway stops stays queued."""
        while True:
            try:
                async with Slot(self.scheduler, job) as runner:
                    self.store.started(job.id, job.attempts + 1, runner.runner_id, time.time())
                    outcome = await self._attempt(job, runner, stream=False)
                    if isinstance(outcome, Answer):  # its lines first: COMPLETED shows them all
                        lines = log_lines(outcome)
                        await self.request_logs.settle(job.id, runner.runner_id, lines)
            except StartTimeout:
                answered = await self._complete_start_timeout(job)
                break
            except ShuttingDown:
                if self.store.durable:
                    return  # stays IN_QUEUE in the store: the next gateway runs it
                answered = await self._complete_shutting_down(job)
                break
            except Withdrawn:
                return
            if not worth_retrying(outcome.status, job.attempts):
                answered = await self._complete(job, outcome)
                break
            logger.warning(
                "request %s: attempt %d failed on %s, retrying",
                job.id,
                job.attempts,
                runner.runner_id,
            )
            job.requeue()
            self.store.requeued(job.id)
            self.scheduler.requeue(job)
        if answered:
            await self._deliver_webhook(job)

    async def _fail_lost(self, job: Job) -> None:
        """A request whose attempts were all used up by runners lost with their gateways."""
        if await self._store_answer(job, 503, json_body({"detail": RUNNER_FAILED}), None):
            await self._deliver_webhook(job)

    async def _deliver_webhook(self, job: Job) -> None:
        if job.webhook_url and job.status == "COMPLETED":
            await deliver_webhook(self.client, job)
            self.store.webhook_done(job.id)

    async def open_websocket(self, websocket: WebSocket, rest: str) -> None:
        """Pass a websocket (or realtime) session through to a runner for as long as it lasts."""
        path, _ = resolve_endpoint(rest, self.manifest.app_name)
        if self.manifest.endpoint_kind(path) not in ("websocket", "realtime"):
            await websocket.close(code=4404, reason=f"Path {path} not found")
            return
        job = Job(path, b"", {})
        job.headers = forward_headers(job, dict(websocket.headers))
        try:
            self.scheduler.submit(job)
            async with Slot(self.scheduler, job) as runner:
                query = f"?{websocket.url.query}" if websocket.url.query else ""
                target = "ws" + runner.url.removeprefix("http") + path + query
                with contextlib.suppress(WebSocketDisconnect):
                    await proxy_websocket(websocket, target, job.headers)
        except (QueueFull, StartTimeout, Withdrawn):  # Withdrawn: ShuttingDown too
            await websocket.close(code=1013, reason="no runner available")

    async def cancel(self, job: Job) -> Response:
        """fal's cancel: a queued request is dropped; a running one is asked to stop. Another
        gateway's request still waiting is answered 499 in the store (the first answer stands,
        whoever runs it)."""
        if job.status == "COMPLETED":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        requested = JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202)
        if self.scheduler.withdraw(job) or (job.foreign and job.status == "IN_QUEUE"):
            if await self._store_answer(job, 499, json_body({"detail": CANCELLED}), None):
                self.metrics.completed(499, time.time() - job.created)
                self.spawn(self._deliver_webhook(job), name=f"webhook-{job.id}")
                return requested
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        if job.foreign:
            return requested  # on another gateway's runner: that gateway's to stop
        runner = self.supervisor.find(job.runner_id)
        if runner is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.client.post(
                    f"{runner.url}{job.path.rstrip('/')}/cancel",
                    headers={REQUEST_ID_HEADER: job.id},
                    timeout=CANCEL_TIMEOUT_SECONDS,
                )
        return requested

    # -- one attempt and its answer -------------------------------------------------------------

    async def _attempt(self, job: Job, runner: Runner, stream: bool) -> Answer | Failure:
        """POST the job to ``runner``: its answer (the body still arriving, when ``stream``),
        or the failure."""
        job.start(runner.runner_id)
        self.request_logs.track(job.id)
        upstream: RunnerResponse | None = None
        try:
            async with asyncio.timeout(self.request_timeout):
                upstream = await self.runners.send(
                    runner.address, "POST", job.path, job.headers.items(), job.body
                )
                if stream:
                    return upstream
                return Answer(upstream.status, upstream.headers, await upstream.read())
        except TimeoutError:
            # Before the slot is released: the freed slot must not go to this runner.
            self.supervisor.replace(runner, f"request over request_timeout={self.request_timeout}s")
            return Failure(504, f"Request exceeded request_timeout={self.request_timeout}s")
        except (RunnerConnectionError, OSError) as exc:
            logger.error("[%s] request %s lost: %s", runner.runner_id, job.id, exc)
            self.supervisor.connection_lost(runner, exc)
            return Failure(503, RUNNER_FAILED)
        finally:
            if upstream is not None and not stream:
                upstream.close()

    async def _complete(self, job: Job, outcome: Answer | Failure) -> bool:
        """Store a queue request's answer (what its result URL and webhook give)."""
        if isinstance(outcome, Failure):
            answered = await self._store_answer(
                job, outcome.status, json_body({"detail": outcome.detail}), None
            )
        else:
            headers = answer_headers(outcome.headers)
            headers.pop("content-length", None)
            answered = await self._store_answer(job, outcome.status, outcome.body, headers)
            self.metrics.answered(job.path, outcome.status, headers, job.inference_time)
        self.metrics.completed(job.response_status or 0, time.time() - job.created)
        return answered

    async def _complete_shutting_down(self, job: Job) -> bool:
        """Not started when the gateway's grace period ended: 503, safe to send again."""
        detail = {"detail": "The server is shutting down; the request was not started"}
        headers = {"content-type": "application/json", "retry-after": "1"}
        answered = await self._store_answer(job, 503, json_body(detail), headers)
        self.metrics.completed(503, time.time() - job.created)
        return answered

    async def _complete_start_timeout(self, job: Job) -> bool:
        detail = {"detail": "Request timed out before a runner could start it"}
        headers = {"content-type": "application/json", "x-fal-request-timeout-type": "user"}
        answered = await self._store_answer(job, 504, json_body(detail), headers)
        self.metrics.completed(504, time.time() - job.created)
        return answered

    async def _store_answer(
        self, job: Job, status: int, body: bytes, headers: dict[str, str] | None
    ) -> bool:
        """Answer the job: a queue request's answer is in the store before anyone can read
        it, so that a caller never sees two answers. False when the store had one already
        (from another gateway): the job then gives that one, and its lines."""
        headers = headers or {"content-type": "application/json"}
        if job.queued:
            logs = self.request_logs.logs_for(job.id)  # settled: kept with the answer
            try:
                first = await self.store.complete(job.id, status, headers, body, time.time(), logs)
            except StoreUnavailable as exc:
                logger.error("request %s: answer kept in memory only: %s", job.id, exc)
                first = True
            if not first:
                stored = await self.store.get(job.id)
                if stored is not None and stored.result_status is not None:
                    status, headers, body = (
                        stored.result_status,
                        stored.result_headers,
                        stored.result_body,
                    )
                    job.stored_logs = stored.logs  # the lines of the answer that stands
                    self.request_logs.forget(job.id)
                job.complete(status, body, headers)
                return False
        job.complete(status, body, headers)
        return True
