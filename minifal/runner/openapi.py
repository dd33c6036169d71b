"""fal's additions to an app's OpenAPI document.

- ``x-fal-protocol`` on the path of each websocket and realtime endpoint: its type, the realtime
  mode inferred from its type hints, content type and options; realtime inputs and outputs get
  their schemas and a ``post`` entry that shows them, as fal's playground reads them.
- ``x-fal-order-paths`` and, on each schema with properties, ``x-fal-order-properties``: the
  order in which fal's UI lists paths and fields.
- On each HTTP endpoint, the answers the framework itself may give (``FRAMEWORK_RESPONSES``),
  whatever the endpoint does: a body it cannot parse, one over the size limit, a full queue,
  a cancelled request, no runner, a timeout; each with ``{"detail": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from minifal.endpoints import RealtimeOptions
from minifal.runner.realtime_modes import RealtimeShape

SCHEMA_REF = "#/components/schemas/{model}"
ERROR_SCHEMA = "FrameworkError"
FRAMEWORK_RESPONSES = {
    "400": "The request could not be read (a body that is not what its content type says), "
    "or the gateway refused its fal_webhook",
    "413": "The request body is larger than the server's limit (--max-body-size)",
    "429": "The gateway's queue is full; retry after the retry-after header's seconds",
    "499": "The request was cancelled (RequestCancelledException, or a queue cancel)",
    "503": "No runner could serve it: a runner was lost or its GPU failed; safe to retry",
    "504": "The request did not finish within the App's request_timeout, or waited longer "
    "than X-Fal-Request-Timeout for a runner",
}
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass(frozen=True)
class WebsocketRoute:
    """A websocket or realtime endpoint, as the OpenAPI document describes it."""

    path: str
    name: str
    doc: str
    realtime: RealtimeOptions | None = None
    shape: RealtimeShape | None = None


def install_fal_openapi(api: FastAPI, websocket_routes: list[WebsocketRoute]) -> None:
    """Make ``api.openapi()`` return FastAPI's document with fal's additions."""
    plain_openapi: Callable[[], dict[str, Any]] = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            spec = plain_openapi()
            _add_framework_responses(spec)
            _add_websocket_routes(spec, websocket_routes)
            _mark_orders(spec)
            api.openapi_schema = spec
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _add_framework_responses(spec: dict[str, Any]) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = {
        "title": ERROR_SCHEMA,
        "type": "object",
        "properties": {"detail": {"title": "Detail"}},
        "required": ["detail"],
    }
    content = {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model=ERROR_SCHEMA)}}}
    for path_item in spec.get("paths", {}).values():
        for method in _HTTP_METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in FRAMEWORK_RESPONSES.items():
                responses.setdefault(status, {"description": description, "content": content})


def _register_schema(spec: dict[str, Any], model: Any) -> str | None:
    if model is None or model is Any:
        return None
    name = getattr(model, "__name__", None) or str(model)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    if name not in schemas:
        schema = TypeAdapter(model).json_schema(ref_template=SCHEMA_REF)
        for definition, definition_schema in schema.pop("$defs", {}).items():
            schemas.setdefault(definition, definition_schema)
        schemas[name] = schema
    return name


def _protocol(route: WebsocketRoute) -> dict[str, Any]:
    options = route.realtime or RealtimeOptions()
    protocol: dict[str, Any] = {
        "type": "realtime" if route.realtime else "websocket",
        "operationId": route.name,
        "config": {
            "buffering": options.buffering,
            "sessionTimeout": options.session_timeout,
            "maxBatchSize": options.max_batch_size,
        },
    }
    if route.realtime is not None and route.shape is not None:
        protocol["contentType"] = options.content_type
        protocol["realtimeMode"] = route.shape.mode
    return protocol


def _message_post(route: WebsocketRoute, input_name: str | None, output_name: str | None) -> dict:
    kind = "Realtime" if route.realtime else "WebSocket"
    operation: dict[str, Any] = {
        "operationId": f"{route.name}_post",
        "summary": f"{kind} endpoint: {route.name}",
        "description": route.doc,
    }
    if input_name:
        schema = {"$ref": SCHEMA_REF.format(model=input_name)}
        operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
    if output_name:
        schema = {"$ref": SCHEMA_REF.format(model=output_name)}
        operation["responses"] = {
            "200": {
                "description": "WebSocket message response",
                "content": {"application/json": {"schema": schema}},
            }
        }
    else:
        operation["responses"] = {"204": {"description": "WebSocket message response"}}
    return operation


def _add_websocket_routes(spec: dict[str, Any], routes: list[WebsocketRoute]) -> None:
    paths = spec.setdefault("paths", {})
    order = list(paths)
    for route in routes:
        input_name = output_name = None
        if route.shape is not None:
            input_name = _register_schema(spec, route.shape.input_type)
            output_name = _register_schema(spec, route.shape.output_type)
        path_item = paths.setdefault(route.path, {})
        path_item["x-fal-protocol"] = _protocol(route)
        if "post" not in path_item and (input_name or output_name):
            path_item["post"] = _message_post(route, input_name, output_name)
        if route.path not in order:
            order.append(route.path)
    spec["x-fal-order-paths"] = order


def _mark_orders(spec: dict[str, Any]) -> None:
    def mark(schema: dict[str, Any]) -> None:
        for part in schema.get("allOf", []):
            mark(part)
        if "properties" in schema:
            schema["x-fal-order-properties"] = list(schema["properties"])

    for schema in spec.get("components", {}).get("schemas", {}).values():
        mark(schema)
