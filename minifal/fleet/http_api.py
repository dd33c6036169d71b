"""The gateway's HTTP surface: fal's sync and queue protocols, pass-through, observability.

Routes (``<app-path>`` is ``<owner>/<app-name>/<endpoint>`` as on fal, or the endpoint itself):
  POST /<app-path>                        sync call, streamed back from the runner
  POST /queue/<app-path>                  queue submit (also any path on a ``queue.`` host)
  GET  /queue/<owner>/<app>/requests/ID[/status[/stream]]   result, status, status as SSE
  PUT  /queue/<owner>/<app>/requests/ID/cancel
  WS   /<app-path>                        websocket and realtime pass-through
  GET  /health /runners /metrics /files/... /openapi.json /docs
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect

from minifal.fleet.auth import KeyAuthMiddleware
from minifal.fleet.gateway import (
    DEFAULT_START_TIMEOUT_SECONDS,
    HOP_BY_HOP,
    Gateway,
    json_body,
)
from minifal.fleet.jobs import Job
from minifal.fleet.queue_host import QueueHostMiddleware
from minifal.fleet.request_queue import PRIORITIES, QueueFull
from minifal.fleet.scheduler import StartTimeout
from minifal.fleet.websocket_proxy import proxy_websocket
from minifal.stored_files_route import STORED_FILES_PATH, stored_file

QUEUE_STATUS_INTERVAL = 1.0


def not_found(path: str) -> JSONResponse:
    return JSONResponse({"detail": f"Path {path} not found"}, 404)


def request_not_found() -> JSONResponse:
    return JSONResponse({"detail": "Request not found"}, 404)


def wants_logs(request: Request) -> bool:
    """fal's ``?logs=1`` (fal_client sends ``logs=true``/``false``)."""
    return request.query_params.get("logs", "").lower() in ("1", "true")


def queue_full(exc: QueueFull) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, 429, {"retry-after": "1"})


def resolve_endpoint(rest: str, app_name: str) -> tuple[str, str]:
    """``owner/app/x`` -> (``/x``, owner); a bare endpoint path -> (path, ``local``)."""
    parts = [part for part in rest.split("/") if part]
    if len(parts) >= 2 and parts[1] == app_name:
        return "/" + "/".join(parts[2:]), parts[0]
    return "/" + "/".join(parts), "local"


def build_gateway_app(gateway: Gateway) -> FastAPI:
    manifest = gateway.manifest
    default_start_timeout = manifest.settings.request_start_timeout or DEFAULT_START_TIMEOUT_SECONDS

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    api = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if gateway.options.auth_key:
        api.add_middleware(KeyAuthMiddleware, key=gateway.options.auth_key)
    api.add_middleware(QueueHostMiddleware)

    async def new_job(request: Request, rest: str) -> tuple[Job, str] | JSONResponse:
        """The job for a call to ``rest`` (fal's app path) and its owner, or the error answer."""
        path, owner = resolve_endpoint(rest, manifest.app_name)
        if manifest.endpoint_kind(path) != "http":
            return not_found(path)
        priority = request.headers.get("x-fal-queue-priority", "normal").lower()
        if priority not in PRIORITIES:
            return JSONResponse(
                {"detail": f"X-Fal-Queue-Priority must be one of {list(PRIORITIES)}"}, 422
            )
        timeout_header = request.headers.get("x-fal-request-timeout")
        try:
            start_timeout = float(timeout_header) if timeout_header else default_start_timeout
        except ValueError:
            return JSONResponse({"detail": "X-Fal-Request-Timeout must be seconds"}, 422)
        job = Job(path, await request.body(), {}, priority, start_timeout)  # type: ignore[arg-type]
        headers = gateway.forward_headers(job, dict(request.headers))
        headers["x-forwarded-host"] = request.headers.get("host", "")
        headers["x-forwarded-proto"] = request.url.scheme
        job.headers = headers
        gateway.metrics.requests_received.inc()
        return job, owner

    def queue_urls(request: Request, owner: str, job: Job) -> dict[str, str]:
        base = f"{request.url.scheme}://{request.headers['host']}/queue/{owner}/"
        base += f"{manifest.app_name}/requests/{job.id}"
        return {
            "request_id": job.id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def status_body(job: Job, with_logs: bool) -> dict[str, Any]:
        if job.status == "IN_QUEUE":
            return {"status": "IN_QUEUE", "queue_position": gateway.scheduler.position(job) or 0}
        # Per-request log lines are not collected (each runner's whole log is in
        # DATA_DIR/runs/<run>/<runner>.log): ``?logs=1`` gets fal's field, empty.
        logs: list[Any] | None = [] if with_logs else None
        if job.status == "IN_PROGRESS":
            return {"status": "IN_PROGRESS", "logs": logs}
        body: dict[str, Any] = {
            "status": "COMPLETED",
            "logs": logs,
            "metrics": {"inference_time": job.inference_time},
        }
        if not job.succeeded:
            detail = job.error_detail
            body["error"] = detail if isinstance(detail, str) else json.dumps(detail)
            body["error_type"] = job.response_headers.get("x-fal-error-type")
        return body

    def find_job(request_id: str) -> Job | None:
        return gateway.jobs.get(request_id)

    # -- observability and files -----------------------------------------------------------------

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "app": manifest.app_name,
            "runners_ready": gateway.supervisor.ready_count,
            "runners": len(gateway.supervisor.runners),
            "queue_size": len(gateway.scheduler.queue),
        }

    @api.get("/runners")
    async def runners() -> dict[str, Any]:
        return gateway.runners_table()

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    api.add_api_route(STORED_FILES_PATH, stored_file, methods=["GET"])

    @api.get("/openapi.json")
    async def openapi() -> dict[str, Any]:
        return manifest.openapi

    @api.get("/docs")
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{manifest.app_name} - docs")

    # -- queue protocol --------------------------------------------------------------------------

    @api.get("/queue/{owner}/{app}/requests/{request_id}/status")
    async def queue_status(request: Request, request_id: str) -> Response:
        job = find_job(request_id)
        if job is None:
            return request_not_found()
        with_logs = wants_logs(request)
        body = status_body(job, with_logs)
        return JSONResponse(body, 200 if job.status == "COMPLETED" else 202)

    @api.get("/queue/{owner}/{app}/requests/{request_id}/status/stream")
    async def queue_status_stream(request: Request, request_id: str) -> Response:
        job = find_job(request_id)
        if job is None:
            return request_not_found()
        with_logs = wants_logs(request)

        async def events() -> AsyncIterator[bytes]:
            last = None
            while True:
                body = status_body(job, with_logs)
                if body != last:
                    last = body
                    yield f"data: {json.dumps(body)}\n\n".encode()
                if job.status == "COMPLETED":
                    return
                # Queue positions move without an event of this job: look again every second.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.changed.wait(), QUEUE_STATUS_INTERVAL)

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.get("/queue/{owner}/{app}/requests/{request_id}")
    async def queue_result(request_id: str) -> Response:
        job = find_job(request_id)
        if job is None:
            return request_not_found()
        if job.status != "COMPLETED":
            return JSONResponse({"detail": "Request is still in progress"}, 400)
        headers = {"x-fal-request-id": job.id, **job.response_headers}
        return Response(job.response_body, job.response_status or 500, headers)

    @api.put("/queue/{owner}/{app}/requests/{request_id}/cancel")
    async def queue_cancel(request_id: str) -> Response:
        job = find_job(request_id)
        if job is None:
            return request_not_found()
        status, body = await gateway.cancel(job)
        return JSONResponse(body, status)

    @api.post("/queue/{rest:path}")
    async def queue_submit(request: Request, rest: str) -> Response:
        made = await new_job(request, rest)
        if isinstance(made, JSONResponse):
            return made
        job, owner = made
        job.webhook_url = request.query_params.get("fal_webhook")
        try:
            gateway.submit_queued(job)
        except QueueFull as exc:
            return queue_full(exc)
        body = {**queue_urls(request, owner, job), "status": "IN_QUEUE"}
        body["queue_position"] = gateway.scheduler.position(job) or 0
        return JSONResponse(body, 200, {"x-fal-request-id": job.id})

    # -- synchronous calls and websockets ---------------------------------------------------------

    @api.post("/{rest:path}")
    async def sync_call(request: Request, rest: str) -> Response:
        made = await new_job(request, rest)
        if isinstance(made, JSONResponse):
            return made
        return await proxy_sync(gateway, made[0])

    @api.websocket("/{rest:path}")
    async def websocket_call(websocket: WebSocket, rest: str) -> None:
        path, _ = resolve_endpoint(rest, manifest.app_name)
        if manifest.endpoint_kind(path) not in ("websocket", "realtime"):
            await websocket.close(code=4404, reason=f"Path {path} not found")
            return
        job = Job(path, b"", {})
        job.headers = gateway.forward_headers(job, dict(websocket.headers))
        try:
            gateway.scheduler.submit(job)
            runner = await gateway.scheduler.wait_for_runner(job)
        except (QueueFull, StartTimeout):
            await websocket.close(code=1013, reason="no runner available")
            return
        try:
            query = f"?{websocket.url.query}" if websocket.url.query else ""
            target = f"ws://127.0.0.1:{runner.port}{path}{query}"
            await proxy_websocket(websocket, target, job.headers)
        except WebSocketDisconnect:
            pass
        finally:
            gateway.scheduler.release(runner)

    return api


async def proxy_sync(gateway: Gateway, job: Job) -> Response:
    """Wait for a runner slot, then stream the runner's answer back as it comes (SSE included)."""
    try:
        gateway.scheduler.submit(job)
    except QueueFull as exc:
        return queue_full(exc)
    try:
        runner = await gateway.scheduler.wait_for_runner(job)
    except StartTimeout:
        gateway.complete_start_timeout(job)
        return Response(job.response_body, 504, job.response_headers)
    except asyncio.CancelledError:
        gateway.scheduler.withdraw(job)
        raise
    job.start(runner.runner_id)
    released = False

    def release(status: int) -> None:
        nonlocal released
        if not released:
            released = True
            gateway.scheduler.release(runner)
            gateway.metrics.completed(status, time.time() - job.created)

    outgoing = gateway.client.build_request(
        "POST", f"{runner.url}{job.path}", content=job.body, headers=job.headers
    )
    try:
        upstream = await asyncio.wait_for(
            gateway.client.send(outgoing, stream=True), gateway.request_timeout
        )
    except TimeoutError:
        gateway.supervisor.replace(  # first: the freed slot must not go to this runner
            runner, f"request over request_timeout={gateway.request_timeout}s"
        )
        release(504)
        detail = f"Request exceeded request_timeout={gateway.request_timeout}s"
        return Response(json_body({"detail": detail}), 504, media_type="application/json")
    except httpx.HTTPError as exc:
        gateway.runner_lost(runner, exc)
        release(503)
        detail = {"detail": "The runner serving this request failed"}
        return Response(json_body(detail), 503, media_type="application/json")
    except BaseException:
        release(499)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            release(upstream.status_code)
            inference = time.time() - job.started if job.started else None
            gateway.metrics.answered(job.path, upstream.status_code, upstream.headers, inference)

    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    return StreamingResponse(body(), upstream.status_code, headers)
