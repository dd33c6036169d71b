"""The gateway's HTTP surface: the routes, each handing its request to the one that serves it.

Routes (``<app-path>`` is ``<owner>/<app-name>/<endpoint>`` as on fal, or the endpoint itself;
``SyncCalls`` takes the sync calls before FastAPI routes the rest):
  POST /<app-path>                        sync call, streamed back from the runner
  POST /queue/<app-path>                  queue submit (also any path on a ``queue.`` host)
  GET  /queue/<owner>/<app>/requests/ID[/status[/stream]]   result, status, status as SSE
  PUT  /queue/<owner>/<app>/requests/ID/cancel
  WS   /<app-path>                        websocket and realtime pass-through
  GET  /health /runners /metrics /files/... /openapi.json /docs
  GET  /dashboard (+ /dashboard/static/..., /dashboard/api/runs[/ID]): the web page (``dashboard``)
  POST /_minifal/deploy, GET /_minifal/revisions[/ID]: new revisions (``admin_api``)

How a request reaches a runner and comes back: ``forwarding``. The queue's bodies:
``queue_protocol``. The gateway's state: ``gateway``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from minifal.fleet.admin_api import AdminRoutes
from minifal.fleet.auth import KeyAuthMiddleware
from minifal.fleet.dashboard import dashboard_router
from minifal.fleet.forwarding import Forwarder, json_error, queue_full
from minifal.fleet.gateway import Gateway
from minifal.fleet.jobs import Job
from minifal.fleet.queue_host import QueueHostMiddleware
from minifal.fleet.queue_protocol import queue_urls, status_body, status_code
from minifal.fleet.request_logs_route import request_logs_router
from minifal.fleet.request_queue import QueueFull
from minifal.fleet.webhook_policy import WebhookRefused
from minifal.host.body_limit import BodyLimitMiddleware
from minifal.runner.stored_files_route import STORED_FILES_PATH, stored_file
from minifal.runner_contract import REQUEST_ID_HEADER

QUEUE_STATUS_INTERVAL = 1.0
REQUESTS_PATH = "/queue/{owner}/{app}/requests/{request_id}"


def wants_logs(request: Request) -> bool:
    """fal's ``?logs=1`` (fal_client sends ``logs=true``/``false``)."""
    return request.query_params.get("logs", "").lower() in ("1", "true")


class SyncCalls:
    """``POST /<app-path>`` (any POST but ``/queue/...``), the gateway's hottest path: plain
    ASGI in front of the FastAPI app, so that it skips FastAPI's routing, exception layers and
    parameter solving (it has no parameters to solve); everything else goes to ``routes``."""

    def __init__(self, forwarder: Forwarder, routes: ASGIApp) -> None:
        self.forwarder = forwarder
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].startswith("/queue/")
        ):
            await self.routes(scope, receive, send)
            return
        request = Request(scope, receive)
        accepted = await self.forwarder.accept(request, scope["path"])
        if isinstance(accepted, Response):
            await accepted(scope, receive, send)
            return
        response = await self.forwarder.call_sync(accepted[0])
        await response(scope, receive, send)


def build_gateway_app(gateway: Gateway) -> ASGIApp:
    """The gateway's ASGI app: queue host, key check and body limit, then sync calls or the
    other routes."""
    app: ASGIApp = SyncCalls(gateway.forwarder, build_routes(gateway))
    app = AdminRoutes(app, gateway.deployer, auth_key_required=bool(gateway.options.auth_key))
    app = BodyLimitMiddleware(app, max_bytes=gateway.options.max_body_bytes)
    if gateway.options.auth_key:
        app = KeyAuthMiddleware(app, key=gateway.options.auth_key)
    return QueueHostMiddleware(app)


def build_routes(gateway: Gateway) -> FastAPI:
    manifest = gateway.manifest
    forwarder = gateway.forwarder

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    api = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def find_job(request_id: str) -> Job | Response:
        job = gateway.jobs.get(request_id)
        return job if job is not None else json_error(404, "Request not found")

    def status_of(job: Job, request: Request, logs_from: int = 0) -> dict[str, Any]:
        logs = gateway.request_logs.fal_logs(job.id, logs_from) if wants_logs(request) else None
        return status_body(job, gateway.queue_position(job), logs)

    # -- observability and files -----------------------------------------------------------------

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return gateway.health()

    @api.get("/runners")
    async def runners() -> dict[str, Any]:
        return gateway.runners_table()

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    api.add_api_route(STORED_FILES_PATH, stored_file, methods=["GET"])

    api.include_router(dashboard_router(gateway))
    api.include_router(request_logs_router(gateway.request_logs))

    @api.get("/openapi.json")
    async def openapi() -> dict[str, Any]:
        return gateway.manifest.openapi  # the serving revision's

    @api.get("/docs")
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{manifest.app_name} - docs")

    # -- queue protocol --------------------------------------------------------------------------

    @api.get(REQUESTS_PATH + "/status")
    async def queue_status(request: Request, request_id: str) -> Response:
        job = find_job(request_id)
        if isinstance(job, Response):
            return job
        return JSONResponse(status_of(job, request), status_code(job))

    @api.get(REQUESTS_PATH + "/status/stream")
    async def queue_status_stream(request: Request, request_id: str) -> Response:
        job = find_job(request_id)
        if isinstance(job, Response):
            return job

        async def events() -> AsyncIterator[bytes]:
            last = None
            logs_sent = 0  # as fal's stream does, each event has the log lines not sent yet
            while True:
                body = status_of(job, request, logs_sent)
                state = {key: value for key, value in body.items() if key != "logs"}
                if state != last or body.get("logs"):
                    last = state
                    logs_sent += len(body.get("logs") or ())
                    yield f"data: {json.dumps(body)}\n\n".encode()
                if job.status == "COMPLETED":
                    return
                # Queue positions move without an event of this job: look again every second.
                watched = job.id if wants_logs(request) else None
                await gateway.request_logs.wait(job.changed, watched, QUEUE_STATUS_INTERVAL)

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.get(REQUESTS_PATH)
    async def queue_result(request_id: str) -> Response:
        job = find_job(request_id)
        if isinstance(job, Response):
            return job
        if job.status != "COMPLETED":
            return json_error(400, "Request is still in progress")
        headers = {REQUEST_ID_HEADER: job.id, **job.response_headers}
        return Response(job.response_body, job.response_status or 500, headers)

    @api.put(REQUESTS_PATH + "/cancel")
    async def queue_cancel(request_id: str) -> Response:
        job = find_job(request_id)
        if isinstance(job, Response):
            return job
        status, body = await forwarder.cancel(job)
        return JSONResponse(body, status)

    @api.post("/queue/{rest:path}")
    async def queue_submit(request: Request, rest: str) -> Response:
        webhook_url = request.query_params.get("fal_webhook") or None
        policy = gateway.options.webhook_policy
        if webhook_url is not None:
            try:
                await asyncio.to_thread(policy.check, webhook_url)  # resolves the name
            except WebhookRefused as exc:
                return json_error(400, str(exc))
        accepted = await forwarder.accept(request, rest)
        if isinstance(accepted, Response):
            return accepted
        job, owner = accepted
        job.webhook_url, job.webhook_policy = webhook_url, policy
        try:
            gateway.submit_queued(job)
        except QueueFull as exc:
            return queue_full(exc)
        base_url = f"{request.url.scheme}://{request.headers['host']}"
        body = {**queue_urls(base_url, owner, manifest.app_name, job), "status": "IN_QUEUE"}
        body["queue_position"] = gateway.queue_position(job) or 0
        return JSONResponse(body, 200, {REQUEST_ID_HEADER: job.id})

    # -- synchronous calls and websockets ---------------------------------------------------------

    @api.websocket("/{rest:path}")
    async def websocket_call(websocket: WebSocket, rest: str) -> None:
        await forwarder.open_websocket(websocket, rest)

    return api
