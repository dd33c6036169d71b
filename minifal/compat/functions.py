"""``fal.function``, with its nearest local meaning.

On fal, ``@fal.function(...)`` makes a function run remotely, in the environment its options
describe, and ``fal.wrap_app(App)`` makes an App such a function (calling it serves the App).
There is no remote side here: a ``LocalFunction`` runs in this process, as fal's own
``run_local()`` does, with its options accepted, checked as fal checks them, and recorded.
``fal.wrap_app`` is the runner's (``minifal.runner.wrap_app``): its call serves the App.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    from minifal.app import App

P = ParamSpec("P")
R = TypeVar("R")


def check_requirements(requirements: object) -> None:
    """fal's rule: a list of requirement strings, or a list of such lists (install layers)."""
    if requirements is None:
        return
    if isinstance(requirements, list) and (
        all(isinstance(item, str) for item in requirements)
        or all(
            isinstance(item, list) and all(isinstance(entry, str) for entry in item)
            for item in requirements
        )
    ):
        return
    raise ValueError("requirements must be a list of strings or a list of lists of strings.")


def _check_options(kind: str, local_python_modules: object, config: dict[str, Any]) -> str:
    check_requirements(config.get("requirements"))
    if config.get("image"):
        kind = "container"
    if kind == "container" and config.get("app_files"):
        raise ValueError("app_files is not supported for container apps.")
    if local_python_modules is not None and (
        not isinstance(local_python_modules, list)
        or not all(isinstance(name, str) for name in local_python_modules)
    ):
        raise ValueError(
            "local_python_modules must be a list of module names as strings, got "
            f"{local_python_modules!r}"
        )
    return kind


class LocalFunction(Generic[P, R]):
    """fal's ``IsolatedFunction``, run here: ``f(...)`` and ``f.run_local(...)`` call the
    function in this process (a coroutine function is run to completion), ``f.submit(...)``
    runs it on a thread and returns a ``Future``, ``f.on(**options)`` is a copy with other
    options. ``options`` holds what was declared (machine type, requirements...)."""

    def __init__(
        self,
        func: Callable[P, R],
        options: dict[str, Any],
        *,
        app_name: str | None = None,
        app_auth: str | None = None,
        app_class: type[App] | None = None,
    ) -> None:
        self.func = func
        self.options = options
        self.app_name = app_name
        self.app_auth = app_auth
        self.app_class = app_class
        """The App that ``wrap_app`` wrapped (``minifal run file.py::app`` serves it)."""
        self._executor: ThreadPoolExecutor | None = None
        self.__wrapped__ = func
        self.__name__ = getattr(func, "__name__", type(self).__name__)
        self.__doc__ = func.__doc__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run_local(*args, **kwargs)

    def run_local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result = self.func(*args, **kwargs)
        if inspect.isawaitable(result):
            return asyncio.run(_awaited(result))
        return result

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Run on this function's own worker thread; threads end with the interpreter."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(thread_name_prefix=f"fal-{self.__name__}")
        return self._executor.submit(self.run_local, *args, **kwargs)

    def on(self, host: object = None, **config: Any) -> LocalFunction[P, R]:
        """A copy with ``config`` over these options (``host`` has no local meaning)."""
        options = {**copy.deepcopy(self.options), **config}
        options["kind"] = _check_options(options.get("kind", "virtualenv"), None, options)
        return LocalFunction(
            self.func,
            options,
            app_name=self.app_name,
            app_auth=self.app_auth,
            app_class=self.app_class,
        )

    def __repr__(self) -> str:
        return f"<LocalFunction {self.__name__} {self.options}>"


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def function(
    kind: str | Callable[..., Any] = "virtualenv",
    *,
    host: object = None,
    local_python_modules: list[str] | None = None,
    **config: Any,
) -> Any:
    """``@fal.function(kind, requirements=..., machine_type=..., ...)``: the decorated function
    becomes a ``LocalFunction``. Also usable bare (``@fal.function``)."""
    if callable(kind):
        return function()(kind)
    kind = _check_options(kind, local_python_modules, config)
    options = {"kind": kind, "local_python_modules": local_python_modules or [], **config}

    def decorate(func: Callable[P, R]) -> LocalFunction[P, R]:
        return LocalFunction(func, dict(options), app_name=getattr(func, "__name__", None))

    return decorate
