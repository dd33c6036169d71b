"""The request being served, as the app sees it through ``self.current_request``."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from minifal.host import envs
from minifal.runner_contract import DEFAULT_PUBLIC_URL


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    """Where clients reach this server (``http://host:port/``); file URLs are built from it."""


_current: ContextVar[RequestContext | None] = ContextVar("minifal_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def set_current_request(context: RequestContext | None):
    return _current.set(context)


def reset_current_request(token) -> None:
    _current.reset(token)


def public_base_url() -> str:
    """Base URL for links the app hands out: the current request's, else the server's own."""
    context = _current.get()
    if context is not None and context.base_url:
        return context.base_url
    return envs.PUBLIC_URL.get() or DEFAULT_PUBLIC_URL
