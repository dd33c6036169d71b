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

Several apps behind one gateway (``build_group_app``): each app's routes above under its own
``/<owner>/<app>/...`` (and ``/queue/<owner>/<app>/...``), its OpenAPI at
``/<owner>/<app>/openapi.json`` (and ``/docs``); ``/health /runners /metrics /files /dashboard
/requests/ID/logs`` are the fleet's, over every app; no bare ``/`` calls; ``/_minifal/deploy``
goes to the app the deploy names (``admin_api.group_admin_router``).

How a request reaches a runner and comes back: ``forwarding``. The queue's bodies:
``queue_protocol``. The gateway's state: ``gateway`` (``gateway_group`` for several apps).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from minifal.fleet.admin_api import AdminRoutes, group_admin_router
from minifal.fleet.auth import KeyAuthMiddleware
from minifal.fleet.dashboard import dashboard_router
from minifal.fleet.forwarding import Forwarder
from minifal.fleet.gateway import Gateway
from minifal.fleet.gateway_group import GatewayGroup
from minifal.fleet.queue_host import QueueHostMiddleware
from minifal.fleet.request_logs_route import request_logs_router
from minifal.host.body_limit import BodyLimitMiddleware
from minifal.runner.stored_files_route import STORED_FILES_PATH, stored_file

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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    api = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    # -- observability and files -----------------------------------------------------------------

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return gateway.health()

    @api.get("/runners")
    async def runners() -> dict[str, Any]:
        return gateway.runners_table()

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=METRICS_MEDIA_TYPE)

    api.add_api_route(STORED_FILES_PATH, stored_file, methods=["GET"])

    options = gateway.options
    api.include_router(
        dashboard_router(
            options.data_dir, options.run_id, options.auth_key, gateway.live_runner_pids
        )
    )
    api.include_router(request_logs_router(gateway.request_logs))

    @api.get("/openapi.json")
    async def openapi() -> dict[str, Any]:
        return gateway.manifest.openapi  # the serving revision's

    @api.get("/docs")
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{manifest.app_name} - docs")

    add_app_routes(api, gateway.forwarder)
    return api


METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"


def add_app_routes(api: FastAPI, forwarder: Forwarder) -> None:
    """An app's queue protocol (``forwarding``'s queue door) and websockets; the sync calls
    are ``SyncCalls``'."""

    @api.get(REQUESTS_PATH + "/status")
    async def queue_status(request: Request, request_id: str) -> Response:
        job = await forwarder.find(request_id)
        return job if isinstance(job, Response) else forwarder.status(job, wants_logs(request))

    @api.get(REQUESTS_PATH + "/status/stream")
    async def queue_status_stream(request: Request, request_id: str) -> Response:
        job = await forwarder.find(request_id)
        if isinstance(job, Response):
            return job
        return forwarder.status_stream(job, wants_logs(request))

    @api.get(REQUESTS_PATH)
    async def queue_result(request_id: str) -> Response:
        job = await forwarder.find(request_id)
        return job if isinstance(job, Response) else forwarder.result(job)

    @api.put(REQUESTS_PATH + "/cancel")
    async def queue_cancel(request_id: str) -> Response:
        job = await forwarder.find(request_id)
        return job if isinstance(job, Response) else await forwarder.cancel(job)

    @api.post("/queue/{rest:path}")
    async def queue_submit(request: Request, rest: str) -> Response:
        return await forwarder.submit_queued(request, rest)

    # -- websockets (the sync calls are SyncCalls') -----------------------------------------------

    @api.websocket("/{rest:path}")
    async def websocket_call(websocket: WebSocket, rest: str) -> None:
        await forwarder.open_websocket(websocket, rest)


# -- several apps --------------------------------------------------------------------------------


def build_group_app(group: GatewayGroup, auth_key: str | None, max_body_bytes: int) -> ASGIApp:
    """The ASGI app of a gateway that serves several apps: queue host, key check and body
    limit, then the app a path names, or the fleet's own routes."""
    app: ASGIApp = AppRouter(group)
    app = BodyLimitMiddleware(app, max_bytes=max_body_bytes)
    if auth_key:
        app = KeyAuthMiddleware(app, key=auth_key)
    return QueueHostMiddleware(app)


class AppRouter:
    """``/<owner>/<app>/...`` and ``/queue/<owner>/<app>/...`` to that app's routes (its sync
    calls first); everything else, and the lifespan, to the fleet's routes."""

    def __init__(self, group: GatewayGroup) -> None:
        self.group = group
        self.fleet_routes = build_fleet_routes(group)
        self.app_routes = {
            name: SyncCalls(gateway.forwarder, build_app_routes(gateway))
            for name, gateway in group.gateways.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.group.find(scope["path"]) if scope["type"] != "lifespan" else None
        if gateway is None:
            await self.fleet_routes(scope, receive, send)
        else:
            await self.app_routes[gateway.manifest.app_name](scope, receive, send)


def build_app_routes(gateway: Gateway) -> FastAPI:
    """One app's routes among several: its OpenAPI and docs under its path, the queue protocol
    and websockets. No lifespan: the group starts and stops every app."""
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/{owner}/{app}/openapi.json")
    async def openapi() -> dict[str, Any]:
        return gateway.manifest.openapi  # the serving revision's

    @api.get("/{owner}/{app}/docs")
    async def docs(owner: str, app: str) -> Response:
        return get_swagger_ui_html(
            openapi_url=f"/{owner}/{app}/openapi.json", title=f"{app} - docs"
        )

    add_app_routes(api, gateway.forwarder)
    return api


def build_fleet_routes(group: GatewayGroup) -> FastAPI:
    """``/health``, ``/runners``, ``/metrics`` over every app; files, the dashboard, request
    logs and deploys; a 404 naming the apps for any other path."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await group.start()
        yield
        await group.stop()

    api = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    first = next(iter(group.gateways.values())).options

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return group.health()

    @api.get("/runners")
    async def runners() -> dict[str, Any]:
        return group.runners_table()

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(group.render_metrics(), media_type=METRICS_MEDIA_TYPE)

    api.add_api_route(STORED_FILES_PATH, stored_file, methods=["GET"])
    api.include_router(
        dashboard_router(first.data_dir, group.run_id, first.auth_key, group.live_runner_pids)
    )
    logs = (gateway.request_logs for gateway in group.gateways.values())
    api.include_router(request_logs_router(*logs))
    api.include_router(group_admin_router(group, auth_key_required=bool(first.auth_key)))

    paths = ", ".join(f"/<owner>/{name}/" for name in group.gateways)

    @api.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def no_app(rest: str) -> Response:
        return JSONResponse({"detail": f"Path /{rest} names no app; the apps: {paths}"}, 404)

    @api.websocket("/{rest:path}")
    async def no_app_websocket(websocket: WebSocket, rest: str) -> None:
        await websocket.close(code=4404, reason=f"Path /{rest} names no app")

    return api
