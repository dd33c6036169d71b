"""The decorators that mark an App's methods as routes: ``endpoint`` and ``realtime``.

They only attach an ``EndpointSpec`` to the function; the runner turns specs into routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from minifal.billing import DECLARATION_ATTRIBUTE, BillingDeclaration, check_endpoint_billing

F = TypeVar("F", bound=Callable[..., Any])

SPEC_ATTRIBUTE = "__minifal_endpoint__"

EndpointKind = Literal["http", "websocket", "realtime"]

MSGPACK = "application/msgpack"
PROBE_METHODS = ("GET", "POST", "HEAD")


class _Inferred:
    """The default of ``input_modal``/``output_modal``: take the model from the type hints."""

    def __repr__(self) -> str:
        return "INFERRED"


INFERRED: Any = _Inferred()


@dataclass(frozen=True)
class HealthCheck:
    """fal's health-check settings for the one endpoint the platform calls to probe a runner."""

    start_period_seconds: int = 30
    timeout_seconds: int = 5
    failure_threshold: int = 3
    call_regularly: bool = True
    method: str | None = None
    """The HTTP method of the probe (fal's default: POST, the endpoint's own)."""

    def __post_init__(self) -> None:
        for name in ("start_period_seconds", "timeout_seconds", "failure_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "failure_threshold" else 0):
                raise ValueError(
                    f"HealthCheck.{name} must be a non-negative integer, got {value!r}"
                )
        if self.method is not None and (
            not isinstance(self.method, str) or self.method.upper() not in PROBE_METHODS
        ):
            raise ValueError(f"HealthCheck.method must be one of {PROBE_METHODS}")

    @property
    def probe_method(self) -> str:
        return (self.method or "POST").upper()


@dataclass(frozen=True)
class RealtimeOptions:
    """The keywords of ``@fal.realtime``, as given (docs/endpoints.md says what each does)."""

    buffering: int | None = None
    session_timeout: float | None = None
    """Seconds a session waits for the next input before it ends (None: as long as the client
    stays connected)."""
    max_batch_size: int = 1
    content_type: str = MSGPACK
    encode_message: Callable[[Any], bytes | str] | None = None
    decode_message: Callable[[bytes], Any] | None = None
    input_modal: Any = INFERRED
    output_modal: Any = INFERRED


@dataclass(frozen=True)
class EndpointSpec:
    path: str
    kind: EndpointKind = "http"
    health_check: HealthCheck | None = None
    realtime: RealtimeOptions | None = None
    """Set for ``kind == "realtime"`` only."""


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"endpoint path must be a string starting with '/', got {path!r}")
    return path


def _mark(function: F, spec: EndpointSpec) -> F:
    if endpoint_spec(function) is not None:
        raise ValueError(f"Can't set multiple routes for the same function: {function.__name__}")
    setattr(function, SPEC_ATTRIBUTE, spec)
    return function


def endpoint(
    path: str,
    *,
    is_websocket: bool = False,
    health_check: HealthCheck | None = None,
    billing: BillingDeclaration | None = None,
) -> Callable[[F], F]:
    """Expose a method at ``path``: a FastAPI POST route, or a raw websocket.

    ``billing`` declares the endpoint's billable components (``minifal.billing``); it is kept
    on the method under fal's attribute name.
    """
    _check_path(path)
    if health_check is not None and not isinstance(health_check, HealthCheck):
        raise TypeError("health_check must be a fal.HealthCheck")
    if health_check is not None and is_websocket:
        raise ValueError("a websocket endpoint cannot be the health check")
    declaration = check_endpoint_billing(billing, is_websocket)
    kind: EndpointKind = "websocket" if is_websocket else "http"

    def decorate(function: F) -> F:
        _mark(function, EndpointSpec(path, kind, health_check))
        setattr(function, DECLARATION_ATTRIBUTE, declaration)
        return function

    return decorate


def realtime(
    path: str,
    *,
    buffering: int | None = None,
    session_timeout: float | None = None,
    input_modal: Any = INFERRED,
    output_modal: Any = INFERRED,
    max_batch_size: int = 1,
    content_type: str = MSGPACK,
    encode_message: Callable[[Any], bytes | str] | None = None,
    decode_message: Callable[[bytes], Any] | None = None,
) -> Callable[[F], F]:
    """Expose a method as a realtime websocket session at ``path`` (fal's ``@fal.realtime``).

    The session's shape comes from the method's type hints, as on fal: one input and one output
    per message (unary), an iterator out (server streaming), ``AsyncIterator[Input]`` in
    (client streaming), or async iterators both ways (bidirectional).
    """
    _check_path(path)
    if buffering is not None and (not isinstance(buffering, int) or buffering < 1):
        raise ValueError(f"buffering must be a positive integer or None, got {buffering!r}")
    if session_timeout is not None and (
        not isinstance(session_timeout, int | float) or session_timeout <= 0
    ):
        raise ValueError(f"session_timeout must be a positive number, got {session_timeout!r}")
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
    for name, codec in (("encode_message", encode_message), ("decode_message", decode_message)):
        if codec is not None and not callable(codec):
            raise TypeError(f"{name} must be callable")
    options = RealtimeOptions(
        buffering=buffering,
        session_timeout=session_timeout,
        max_batch_size=max_batch_size,
        content_type=content_type,
        encode_message=encode_message,
        decode_message=decode_message,
        input_modal=input_modal,
        output_modal=output_modal,
    )
    return lambda function: _mark(function, EndpointSpec(path, "realtime", None, options))


def endpoint_spec(function: Any) -> EndpointSpec | None:
    return getattr(function, SPEC_ATTRIBUTE, None)
