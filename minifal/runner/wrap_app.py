"""``fal.wrap_app``: an App made a ``LocalFunction`` whose call serves it in the foreground,
exactly as ``minifal serve path/to/file.py::MyApp`` does (``python app.py`` with
``fal.wrap_app(MyApp)()`` under ``if __name__ == "__main__"``).

The package root imports it (a fal top-level name); the runner's server is imported by the call
that serves, so ``import fal`` does not load uvicorn.
"""

from __future__ import annotations

import inspect
from typing import Any

from minifal.app import App
from minifal.compat.functions import LocalFunction
from minifal.host import envs


def wrap_app(cls: type[App], **kwargs: Any) -> LocalFunction[..., int]:
    """``app = fal.wrap_app(MyApp); app()``: serve ``MyApp`` in the foreground like
    ``minifal serve path/to/file.py::MyApp``, on ``$MINIFAL_HOST:$MINIFAL_PORT`` (default
    127.0.0.1:8080) or the ``exposed_port`` given; returns the server's exit code."""
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise TypeError(f"wrap_app() takes a fal.App subclass, got {cls!r}")
    if "<locals>" in cls.__qualname__:
        raise TypeError(f"{cls.__qualname__} must be defined at the top level of its file")
    reference = f"{inspect.getfile(cls)}::{cls.__qualname__}"
    settings = cls.settings()

    def serve_app(
        *, exposed_port: int | None = None, exposed_metrics_port: int | None = None
    ) -> int:
        """fal's keywords; the metrics port has no local meaning (the gateway serves /metrics)."""
        from minifal.runner.server import serve

        return serve(reference, host=envs.HOST.get(), port=exposed_port or envs.PORT.get())

    options = {
        "kind": settings.kind or "virtualenv",
        "requirements": list(settings.requirements),
        "machine_type": settings.machine_type,
        "num_gpus": settings.num_gpus,
        **kwargs,
    }
    serve_app.__name__ = cls.__name__
    return LocalFunction(
        serve_app,
        options,
        app_name=cls.resolved_app_name(),
        app_auth=settings.app_auth,
        app_class=cls,
    )
