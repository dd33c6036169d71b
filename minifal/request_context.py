"""The request being served, as the app sees it through ``self.current_request`` (or, from code
without ``self``, ``fal.ref.get_current_app().current_request``)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from minifal.host import envs
from minifal.runner_contract import DEFAULT_PUBLIC_URL


@dataclass(frozen=True)
class RequestContext:
    """fal's fields (``request_id``, ``endpoint``, ``lifecycle_preference``, ``headers``,
    ``upload_policy``) and minifal's ``base_url``."""

    request_id: str
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    """Where clients reach this server (``http://host:port/``); file URLs are built from it."""
    lifecycle_preference: dict[str, str] | None = None
    """The caller's ``x-fal-object-lifecycle-preference`` header, parsed (None when absent or
    not a JSON object). fal's gateway always sends one; minifal's passes the caller's on."""
    upload_policy: Any = None
    """fal's per-request upload destination; always None here: outputs are stored in the data
    dir whatever the caller asks (``save_with_policy`` says so once)."""


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
