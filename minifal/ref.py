"""fal's ``fal.ref``: the App instance this process serves, for code that has no ``self``.

A helper module called from an endpoint (say, one that builds a ``File``) reaches the request
being served with ``get_current_app().current_request``. The runner sets the App before its
``setup()`` runs and clears it after ``teardown()``; in a process that serves no App (the
gateway, a manifest import, a script) it is None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minifal.app import App

current_app: App | None = None
"""The served App instance (fal's module attribute; read it through ``get_current_app()``)."""


def set_current_app(app: App) -> None:
    """Record the App this process serves. As on fal, a process serves one App: setting a
    second one while the first is set is an error (``clear_current_app`` ends the first)."""
    global current_app
    if current_app is not None and current_app is not app:
        raise RuntimeError(
            f"current_app is already set to {type(current_app).__name__}; a process serves one App"
        )
    current_app = app


def get_current_app() -> App | None:
    return current_app


def clear_current_app(app: App) -> None:
    """The runner's teardown: forget ``app`` if it is the current one (minifal's addition, so
    that a process that served one App, a test say, can serve another after it)."""
    global current_app
    if current_app is app:
        current_app = None
