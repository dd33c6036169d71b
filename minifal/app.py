"""``App``: the class users subclass, exactly as they would ``fal.App``, and fal's ``fal.app``
constants. ``import fal.app`` reaches ``minifal.compat.fal_app``, which adds ``wrap_app`` (it
serves an App, so it lives with the runner) to the names of this module."""

from __future__ import annotations

import difflib
import inspect
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.concurrency import run_in_threadpool

from minifal.app_client import AppClient, AppClientError, AppSpawnInfo, EndpointClient, spawn_app
from minifal.billing import BillingComponents, collect_billing_components
from minifal.endpoints import EndpointSpec, endpoint, endpoint_spec
from minifal.request_context import RequestContext, current_request
from minifal.runner_contract import ENDPOINT_HEADER, REQUEST_ID_HEADER
from minifal.settings import (
    CLASS_KEYWORD_ALIASES,
    SETTING_NAMES,
    AppSettings,
    AppSettingsError,
    kebab_case,
    validate_settings,
)
from minifal.version import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("minifal.app")

_DEFAULTS = AppSettings()

# fal.app's constants, with their local meaning.
REQUEST_ID_KEY = REQUEST_ID_HEADER
REQUEST_ENDPOINT_KEY = ENDPOINT_HEADER
CDN_TOKEN_KEY = "x-fal-cdn-token"
"""fal's CDN token header; minifal has no CDN and never sends it."""
REALTIME_APP_REQUIREMENTS = ["websockets", "msgpack"]
"""What fal adds to a realtime App's requirements; minifal's own install has both."""
WMA_APP_REQUIREMENTS = ["aiortc>=1.9,<2"]
"""What fal adds to a ``fal.wma`` App's requirements (fal.wma is not part of minifal)."""
DEFAULT_PLATFORM_STARTUP_TIMEOUT = 600
"""fal's ``startup_timeout`` when an App sets none."""
DEFAULT_APP_FILES_IGNORE = [r"\.pyc$", r"__pycache__/", r"\.git/", r"\.DS_Store$"]
"""fal's default ``app_files_ignore`` regexes (minifal serves an App's files where they are)."""
PART_FINDER_RE = re.compile(r"[A-Z][a-z]*")
"""fal's pattern for an App's default name; minifal's ``kebab_case`` also keeps digits and
acronyms whole (``SDTurbo`` -> ``sd-turbo``)."""

__all__ = [
    "CDN_TOKEN_KEY",
    "DEFAULT_APP_FILES_IGNORE",
    "DEFAULT_PLATFORM_STARTUP_TIMEOUT",
    "PART_FINDER_RE",
    "REALTIME_APP_REQUIREMENTS",
    "REQUEST_ENDPOINT_KEY",
    "REQUEST_ID_KEY",
    "WMA_APP_REQUIREMENTS",
    "App",
    "AppClient",
    "AppClientError",
    "AppSpawnInfo",
    "EndpointClient",
    "RequestContext",
    "endpoint",
    "logger",
    "open_isolate_channel",
]

_logged_extra_keywords: set[str] = set()
HOST_ATTRIBUTES = frozenset({"_scheduler", "_scheduler_options", "resolver"})
"""fal's own ``host_kwargs`` (its platform's scheduler options): as class attributes too, they
are kept in ``host_kwargs``."""


async def open_isolate_channel(address: str) -> None:
    """fal's gRPC channel to its isolate agent (request-scoped log labels). minifal runs no
    agent: there is none to open, so it returns None, which fal's own callers treat as
    "no agent here"."""
    return None


class App:
    """Base class of a served application.

    Settings are class attributes or class keywords (``class A(fal.App, keep_alive=300)``).
    ``setup()`` runs once per runner before it takes traffic; endpoint methods serve requests.
    """

    # fal's settings with fal's defaults; subclasses override them as class attributes.
    machine_type: ClassVar[str | list[str]] = _DEFAULTS.machine_type
    num_gpus: ClassVar[int | None] = _DEFAULTS.num_gpus
    keep_alive: ClassVar[float] = _DEFAULTS.keep_alive
    min_concurrency: ClassVar[int] = _DEFAULTS.min_concurrency
    max_concurrency: ClassVar[int | None] = _DEFAULTS.max_concurrency
    concurrency_buffer: ClassVar[int] = _DEFAULTS.concurrency_buffer
    concurrency_buffer_perc: ClassVar[int] = _DEFAULTS.concurrency_buffer_perc
    scaling_delay: ClassVar[float] = _DEFAULTS.scaling_delay
    max_multiplexing: ClassVar[int] = _DEFAULTS.max_multiplexing
    request_timeout: ClassVar[float | None] = _DEFAULTS.request_timeout
    request_start_timeout: ClassVar[float | None] = _DEFAULTS.request_start_timeout
    startup_timeout: ClassVar[float | None] = _DEFAULTS.startup_timeout
    requirements: ClassVar[list[str] | list[list[str]]] = []
    requirements_context_dir: ClassVar[str | None] = None
    local_python_modules: ClassVar[list[str]] = []
    app_name: ClassVar[str | None] = None
    app_auth: ClassVar[str | None] = None
    app_files: ClassVar[list[str]] = []
    app_files_ignore: ClassVar[list[str]] = []
    app_files_context_dir: ClassVar[str | None] = None
    secrets: ClassVar[list[str]] = []
    regions: ClassVar[list[str]] = []
    image: ClassVar[Any] = None
    kind: ClassVar[str | None] = None
    python_version: ClassVar[str | None] = None
    termination_grace_period_seconds: ClassVar[float | None] = None
    metrics_port: ClassVar[int | None] = None
    skip_retry_conditions: ClassVar[list[str] | None] = None
    retry_config: ClassVar[Any] = None
    data_mounts: ClassVar[list[str] | None] = None

    host_kwargs: ClassVar[dict[str, Any]] = {}
    """Class keywords that are not settings minifal knows (fal's private ``_scheduler``,
    ``_scheduler_options``..., or a newer fal's): kept here as fal keeps them, and unused."""
    local_file_path: ClassVar[str | None] = None

    _settings: ClassVar[AppSettings] = _DEFAULTS
    _given_settings: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **keywords: Any) -> None:
        super().__init_subclass__()
        if "__init__" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides __init__, which fal.App does not allow: "
                "do one-time initialisation in setup() instead"
            )
        given = {}
        extra = dict(cls.host_kwargs)
        for name in HOST_ATTRIBUTES | extra.keys():  # fal copies these class attributes too
            if name in cls.__dict__ and not _is_method(cls.__dict__[name]):
                extra[name] = cls.__dict__[name]
        for keyword, value in keywords.items():
            setting = CLASS_KEYWORD_ALIASES.get(keyword, keyword)
            if setting in SETTING_NAMES:
                given[setting] = value
            else:
                extra[keyword] = value
                _note_extra_keyword(cls.__name__, keyword)
        cls.host_kwargs = extra
        _warn_near_miss_attributes(cls)
        cls._given_settings = {}
        cls._set_settings(given)

    @classmethod
    def _set_settings(cls, values: dict[str, Any]) -> None:
        """Settings given outside the class body (class keywords, a project's table). They are
        kept apart from the class's attributes, so that a method of the same name stays a
        method; as a class attribute too where no method has the name (fal's ``App.keep_alive``)."""
        for name, value in values.items():
            if not _is_method(cls.__dict__.get(name)):
                setattr(cls, name, value)
        cls._given_settings = {**cls._given_settings, **values}
        cls._settings = validate_settings(cls.__name__, _setting_values(cls))

    @classmethod
    def override_settings(cls, values: dict[str, Any]) -> None:
        """Set settings from outside the class body (a project's ``[tool.fal.apps]`` table)."""
        unknown = set(values) - SETTING_NAMES
        if unknown:
            raise AppSettingsError(f"unknown App setting(s) {sorted(unknown)} for {cls.__name__}")
        cls._set_settings(values)

    # -- settings -------------------------------------------------------------------------

    @classmethod
    def settings(cls) -> AppSettings:
        return cls._settings

    @classmethod
    def resolved_app_name(cls) -> str:
        return cls._settings.app_name or kebab_case(cls.__name__)

    @classmethod
    def get_billing_components(cls) -> dict[str, BillingComponents]:
        """Billing declarations per endpoint path (fal's name), kept out of the OpenAPI."""
        return collect_billing_components(cls.endpoints(), cls)

    @classmethod
    def get_endpoints(cls) -> list[str]:
        """fal's name: the paths of the App's routes."""
        return [spec.path for _, spec in cls.endpoints()]

    @classmethod
    def endpoints(cls) -> list[tuple[str, EndpointSpec]]:
        """``(method name, spec)`` of every decorated method, sorted by path as on fal."""
        found: dict[str, tuple[str, EndpointSpec]] = {}
        health_checks = []
        for name in dir(cls):
            spec = endpoint_spec(getattr(cls, name, None))
            if spec is None:
                continue
            if spec.path in found:
                raise AppSettingsError(
                    f"{cls.__name__}: {found[spec.path][0]}() and {name}() "
                    f"both use path {spec.path}"
                )
            found[spec.path] = (name, spec)
            if spec.health_check is not None:
                health_checks.append(name)
        if len(health_checks) > 1:
            raise AppSettingsError(
                f"{cls.__name__}: only one endpoint may have a health_check, found {health_checks}"
            )
        return [found[path] for path in sorted(found)]

    # -- lifecycle the user overrides -------------------------------------------------------

    def setup(self) -> Any:
        """Load models and warm up; may be ``async``. Runs before the runner takes traffic."""

    def teardown(self) -> Any:
        """Release resources when the runner stops; may be ``async``."""

    def handle_exit(self) -> None:
        """Called when the runner receives SIGTERM, before in-flight requests drain."""

    def health(self) -> dict[str, Any]:
        """Served at ``GET /health``."""
        return {"version": __version__}

    def provide_hints(self) -> list[str]:
        """Routing hints sent with every answer (``X-Fal-Runner-Hints``); an App that does
        not override this sends none."""
        raise NotImplementedError

    def _add_extra_routes(self, app: FastAPI) -> None:
        """fal's hook for routes beside the endpoints, called when the runner builds its
        FastAPI app: ``GET /health`` answers ``health()``. An App may override it, calling
        ``super()``, to add its own (a ``GET /ready`` beside a POST health check, say).
        Exceptions escaping these routes are answered as an endpoint's are."""

        @app.get("/health", include_in_schema=False)
        async def health() -> Any:
            return await _call(self.health)

    @classmethod
    def spawn(cls) -> AppSpawnInfo:
        """Serve this App in a runner process of its own (``minifal serve``) on a free
        loopback port; ``.wait()`` until ready, ``.stop()`` it. fal's ``AppClient.connect``
        uses it."""
        return spawn_app(cls)

    # -- request context ----------------------------------------------------------------------

    @property
    def current_request(self) -> RequestContext | None:
        """The request being served by this task or thread: id, endpoint path, headers."""
        return current_request()


async def _call(function: Callable[[], Any]) -> Any:
    """A plain function in a worker thread (the loop stays free), a coroutine awaited."""
    if inspect.iscoroutinefunction(function):
        return await function()
    result = await run_in_threadpool(function)
    return await result if inspect.isawaitable(result) else result


def _note_extra_keyword(class_name: str, keyword: str) -> None:
    """Once per keyword and process: at debug, as fal takes such keywords silently; a near miss
    of a setting (``keep_alvie``) at warning, since it is most likely a typo."""
    close = difflib.get_close_matches(keyword, SETTING_NAMES, n=1, cutoff=0.85)
    if close:
        logger.warning(
            "%s: class keyword %r is not an App setting (did you mean %r?); kept in host_kwargs",
            class_name,
            keyword,
            close[0],
        )
        return
    if keyword not in _logged_extra_keywords:
        _logged_extra_keywords.add(keyword)
        logger.debug("%s: class keyword %r kept in host_kwargs, unused here", class_name, keyword)


def _is_method(value: Any) -> bool:
    """A function, an endpoint, a property or a ``staticmethod``/``classmethod``: never a
    setting's value, whatever its name."""
    return inspect.isroutine(value) or isinstance(value, (property, staticmethod, classmethod))


def _setting_values(cls: type[App]) -> dict[str, Any]:
    """Each setting's value: the nearest class (in method resolution order) that gives it, as
    a keyword or a class attribute; an attribute that is a method gives no setting."""
    values: dict[str, Any] = {}
    for name in SETTING_NAMES:
        for klass in cls.__mro__:
            given = klass.__dict__.get("_given_settings", {})
            if name in given:
                values[name] = given[name]
                break
            if name in klass.__dict__ and not _is_method(klass.__dict__[name]):
                values[name] = klass.__dict__[name]
                break
    return values


def _warn_near_miss_attributes(cls: type) -> None:
    """Users add their own class attributes; only names one typo away from a setting are suspect."""
    for name in cls.__dict__:
        if (
            name.startswith("_")
            or name in SETTING_NAMES
            or isinstance(cls.__dict__[name], Callable)
        ):
            continue
        close = difflib.get_close_matches(name, SETTING_NAMES, n=1, cutoff=0.85)
        if close:
            logger.warning(
                "%s.%s is not an App setting; did you mean %s?", cls.__name__, name, close[0]
            )
