"""Build the FastAPI application that serves one App instance.

Routes: the App's endpoints (POST, websockets, realtime; docs/endpoints.md), the App's extra
routes (``App._add_extra_routes``: ``GET /health`` answering ``health()``, and whatever an App
adds there, as on fal), the fleet's readiness probe (``runner/readiness.py``), ``GET /files/...``
(outputs stored under the data dir), OpenAPI with fal's additions (``runner/openapi.py``) at
``/openapi.json`` and docs at ``/docs``. Every HTTP answer carries the App's
``provide_hints()`` (``runner/runner_hints.py``).
The lifespan makes the App ``fal.ref``'s current app, runs ``setup()`` before the server accepts
connections and ``teardown()`` after it drained them, then stops the app's batchers
(``batching.py``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import ResponseValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from minifal.app import App
from minifal.compiled import background_work
from minifal.endpoints import EndpointSpec, RealtimeOptions
from minifal.exceptions import FalServerlessException
from minifal.host.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from minifal.host.collector import freeze_survivors, pauses_timed
from minifal.ref import clear_current_app, set_current_app
from minifal.request_context import RequestContext, reset_current_request, set_current_request
from minifal.runner.batching import close_batchers
from minifal.runner.errors import INTERNAL_SERVER_ERROR, error_response, install_error_handlers
from minifal.runner.offload_route import install_offload_routes
from minifal.runner.openapi import WebsocketRoute, install_fal_openapi
from minifal.runner.readiness import probe, readiness_answer
from minifal.runner.realtime import serve_realtime_session
from minifal.runner.realtime_frames import FrameCodec
from minifal.runner.realtime_modes import RealtimeShape, realtime_shape
from minifal.runner.request_id import RequestIdMiddleware
from minifal.runner.request_logs import RequestLines
from minifal.runner.runner_hints import RunnerHintsMiddleware
from minifal.runner.signatures import resolved_signature
from minifal.runner.stored_files_route import STORED_FILES_PATH, stored_file
from minifal.runner_contract import ENDPOINT_HEADER, READY_PATH, REQUEST_ID_HEADER
from minifal.startup import events as startup_events
from minifal.toolkit.file.file import request_lifecycle_preference

logger = logging.getLogger("minifal.runner")

REQUEST_PARAMETER = "minifal_request__"
WEBSOCKET_PARAMETER = "minifal_websocket__"


async def call_maybe_async(function: Callable[..., Any], *args: Any) -> Any:
    """Await coroutine functions; run plain ones in a worker thread so the loop stays free."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    result = await run_in_threadpool(function, *args)
    if inspect.isawaitable(result):
        return await result
    return result


def request_context(request: Request | WebSocket, endpoint_path: str) -> RequestContext:
    headers = {key: value for key, value in request.headers.items()}
    proto = headers.get("x-forwarded-proto") or request.url.scheme.replace("ws", "http")
    host = headers.get("x-forwarded-host") or headers.get("host") or request.url.netloc
    prefix = headers.get("x-forwarded-prefix", "").strip("/")
    base_url = f"{proto}://{host}/" + (f"{prefix}/" if prefix else "")
    return RequestContext(
        request_id=headers.get(REQUEST_ID_HEADER, ""),
        endpoint=headers.get(ENDPOINT_HEADER, endpoint_path),
        headers=headers,
        base_url=base_url,
        lifecycle_preference=request_lifecycle_preference(request),
    )


class FirstRequestTimer:
    """Records the ``first_request`` startup phase once, for the first request served."""

    def __init__(self) -> None:
        self.done = False

    def observe(self, start: float, path: str, status: int) -> None:
        if not self.done:
            self.done = True
            startup_events.record("first_request", start, time.time(), path=path, status=status)


def build_asgi_app(
    app: App,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    freeze_collector: bool = False,
    lines: RequestLines | None = None,
) -> FastAPI:
    """``max_body_bytes``: larger request bodies get 413. ``freeze_collector``: this process is
    the app's server, so its lifespan may freeze the garbage collector's survivors around
    ``setup()`` (process-wide: see collector.py). ``lines``: tag each request's log lines for
    the gateway (``request_logs``)."""
    app_class = type(app)
    endpoints = app_class.endpoints()  # validates paths and health checks before serving

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        set_current_app(app)
        try:
            with (
                startup_events.phase("setup", app=app_class.__name__) as details,
                pauses_timed() as pauses,
            ):
                if freeze_collector:
                    details["frozen_objects"] = freeze_survivors()  # the imports
                try:
                    await call_maybe_async(app.setup)
                finally:
                    details.update(pauses.details())
            if freeze_collector:
                freeze_survivors()  # what setup() built lives as long as the server
            yield
            with startup_events.phase("teardown"):
                try:
                    await call_maybe_async(app.teardown)
                except Exception:
                    logger.exception("teardown() failed")
                await close_batchers(app)  # @batched workers: what still waits runs, then they end
                await run_in_threadpool(background_work.stop_all)  # compiles after setup()
        finally:
            clear_current_app(app)

    api = FastAPI(
        title=app_class.resolved_app_name(),
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    api.add_middleware(RunnerHintsMiddleware, provide_hints=app.provide_hints)
    api.add_middleware(RequestIdMiddleware, lines=lines)
    api.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    first_request = FirstRequestTimer()

    health_check = next(
        ((spec.path, spec.health_check) for _, spec in endpoints if spec.health_check), None
    )

    @api.get(READY_PATH, include_in_schema=False)
    async def ready() -> Response:
        if health_check is None:
            return readiness_answer(200, "")
        return readiness_answer(*await probe(api, *health_check))

    app._add_extra_routes(api)
    api.add_api_route(STORED_FILES_PATH, stored_file, methods=["GET"], include_in_schema=False)
    install_offload_routes(api)  # around a suspension's checkpoint

    websocket_routes: list[WebsocketRoute] = []
    for method_name, spec in endpoints:
        method = getattr(app, method_name)
        if spec.kind == "http":
            handler = http_handler(method, spec, first_request)
            api.add_api_route(
                spec.path,
                handler,
                methods=["POST"],
                name=method_name,
                response_class=_documented_response_class(method),
            )
            if spec.health_check is not None:
                # The declared health path answers GET too (probes and people use GET); a GET
                # route the App added itself (``_add_extra_routes``) came first and wins.
                api.add_api_route(spec.path, handler, methods=["GET"], include_in_schema=False)
            continue
        shape = None
        if spec.kind == "websocket":
            handler = websocket_handler(method, spec)
        else:
            # A shape fal cannot serve fails the app's start, not each session.
            shape = realtime_shape(method, spec.realtime or RealtimeOptions())
            handler = realtime_handler(method, spec, shape)
        api.add_api_websocket_route(spec.path, handler, method_name)
        websocket_routes.append(
            WebsocketRoute(spec.path, method.__name__, method.__doc__ or "", spec.realtime, shape)
        )
    install_fal_openapi(api, websocket_routes)

    install_error_handlers(api)

    @api.exception_handler(ResponseValidationError)
    async def invalid_output(request: Request, exc: ResponseValidationError) -> Response:
        # The endpoint returned something its output model rejects: the app's fault, a 500 in
        # fal's shape (FastAPI's default is a text/plain body).
        logger.error("%s returned an invalid output: %s", request.url.path, exc.errors())
        return JSONResponse({"detail": INTERNAL_SERVER_ERROR}, 500)

    async def escaped(request: Request, exc: Exception) -> Response:
        # An exception that escaped a route that is not an endpoint (the App's extra routes,
        # its health()): mapped as an endpoint's is (fal's AppException, GPU errors...).
        return error_response(exc, request.headers.get(REQUEST_ID_HEADER))

    # fal's exceptions are answers, handled where HTTPException is; anything else also reaches
    # the server's error layer, which logs it as uvicorn does.
    api.add_exception_handler(FalServerlessException, escaped)
    api.add_exception_handler(Exception, escaped)

    return api


def _documented_response_class(method: Callable[..., Any]) -> type[Response]:
    """An endpoint annotated to return a ``Response`` (a ``StreamingResponse`` of server-sent
    events, say) is documented with that class's media type, or none where the class has none,
    rather than as JSON."""
    returns = resolved_signature(method).return_annotation
    if isinstance(returns, type) and issubclass(returns, Response):
        return returns
    return JSONResponse


def _the_request(request: Request) -> Request:
    return request


def http_handler(
    method: Callable[..., Any], spec: EndpointSpec, first_request: FirstRequestTimer
) -> Callable[..., Any]:
    """A FastAPI endpoint with the method's own parameters, so FastAPI injects each of them as
    it would for the method itself (the body model, ``Request``, ``Response``, ``Header``,
    ``Depends``...), plus the raw request for ``current_request``.

    The raw request comes through a dependency: a second ``Request`` parameter of the route
    itself would take the slot FastAPI keeps for the method's own ``request: Request``.
    """
    signature = resolved_signature(method)
    request_parameter = inspect.Parameter(
        REQUEST_PARAMETER,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Request,
        default=Depends(_the_request),
    )
    is_async = inspect.iscoroutinefunction(method)

    async def handle(**kwargs: Any) -> Any:
        request: Request = kwargs.pop(REQUEST_PARAMETER)
        context = request_context(request, spec.path)
        token = set_current_request(context)
        start = time.time()
        status = 200
        try:
            if is_async:
                return await method(**kwargs)
            return await run_in_threadpool(method, **kwargs)
        except Exception as exc:
            response = error_response(exc, context.request_id)
            status = response.status_code
            return response
        finally:
            reset_current_request(token)
            first_request.observe(start, spec.path, status)

    handle.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), request_parameter]
    )
    handle.__name__ = method.__name__
    handle.__doc__ = method.__doc__
    return handle


def _the_websocket(websocket: WebSocket) -> WebSocket:
    return websocket


def websocket_handler(method: Callable[..., Any], spec: EndpointSpec) -> Callable[..., Any]:
    """A FastAPI websocket route with the method's own parameters (``Query``, ``Header``,
    ``Depends``... injected by FastAPI); an unannotated first parameter is the websocket."""
    if not inspect.iscoroutinefunction(method):
        raise TypeError(
            f"websocket endpoint {method.__name__}() must be 'async def f(self, websocket)'"
        )
    signature = resolved_signature(method)
    parameters = list(signature.parameters.values())
    if not parameters:
        raise TypeError(f"websocket endpoint {method.__name__}() needs a websocket parameter")
    if parameters[0].annotation is inspect.Parameter.empty:
        parameters[0] = parameters[0].replace(annotation=WebSocket)
    websocket_parameter = inspect.Parameter(
        WEBSOCKET_PARAMETER,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=WebSocket,
        default=Depends(_the_websocket),
    )

    async def handle(**kwargs: Any) -> None:
        websocket: WebSocket = kwargs.pop(WEBSOCKET_PARAMETER)
        token = set_current_request(request_context(websocket, spec.path))
        try:
            await method(**kwargs)
        finally:
            reset_current_request(token)

    handle.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*parameters, websocket_parameter]
    )
    handle.__name__ = method.__name__
    return handle


def realtime_handler(
    method: Callable[..., Any], spec: EndpointSpec, shape: RealtimeShape
) -> Callable[..., Any]:
    options = spec.realtime or RealtimeOptions()
    codec = FrameCodec.for_endpoint(options, shape.input_type)

    async def handle(websocket: WebSocket) -> None:
        token = set_current_request(request_context(websocket, spec.path))
        try:
            await serve_realtime_session(websocket, method, shape, codec, options)
        finally:
            reset_current_request(token)

    return handle
