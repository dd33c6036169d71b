"""The decorators that mark an App's methods as routes: ``endpoint`` and ``realtime``.

They only attach an ``EndpointSpec`` to the function; the runner turns specs into routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

SPEC_ATTRIBUTE = "__minifal_endpoint__"

EndpointKind = Literal["http", "websocket", "realtime"]


@dataclass(frozen=True)
class HealthCheck:
    """fal's health-check settings for the one endpoint the platform calls to probe a runner."""

    start_period_seconds: int = 30
    timeout_seconds: int = 5
    failure_threshold: int = 3
    call_regularly: bool = True

    def __post_init__(self) -> None:
        for name in ("start_period_seconds", "timeout_seconds", "failure_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "failure_threshold" else 0):
                raise ValueError(
                    f"HealthCheck.{name} must be a non-negative integer, got {value!r}"
                )


@dataclass(frozen=True)
class EndpointSpec:
    path: str
    kind: EndpointKind = "http"
    health_check: HealthCheck | None = None
    session_timeout: float | None = None
    """Realtime only: close an idle session after this many seconds."""


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"endpoint path must be a string starting with '/', got {path!r}")
    return path


def endpoint(
    path: str, *, is_websocket: bool = False, health_check: HealthCheck | None = None
) -> Callable[[F], F]:
    """Expose a method at ``path``: POST with a pydantic body, or a raw websocket."""
    _check_path(path)
    if health_check is not None and not isinstance(health_check, HealthCheck):
        raise TypeError("health_check must be a fal.HealthCheck")
    if health_check is not None and is_websocket:
        raise ValueError("a websocket endpoint cannot be the health check")

    def decorate(function: F) -> F:
        kind: EndpointKind = "websocket" if is_websocket else "http"
        setattr(function, SPEC_ATTRIBUTE, EndpointSpec(path, kind, health_check))
        return function

    return decorate


def realtime(
    path: str,
    *,
    buffering: int | None = None,
    session_timeout: float | None = None,
    max_batch_size: int = 1,
    content_type: str = "application/msgpack",
    input_modal: Any = None,
) -> Callable[[F], F]:
    """Expose a method as a msgpack websocket session at ``path`` (fal's ``@fal.realtime``).

    One message in gives one message out (unary), or several when the method returns an
    iterator (server streaming). ``buffering``, ``max_batch_size``, ``content_type`` and
    ``input_modal`` are accepted for compatibility; minifal processes messages one at a time.
    """
    _check_path(path)
    if content_type != "application/msgpack":
        raise ValueError("minifal's realtime endpoints speak msgpack only")

    def decorate(function: F) -> F:
        spec = EndpointSpec(path, "realtime", None, session_timeout)
        setattr(function, SPEC_ATTRIBUTE, spec)
        return function

    return decorate


def endpoint_spec(function: Any) -> EndpointSpec | None:
    return getattr(function, SPEC_ATTRIBUTE, None)
