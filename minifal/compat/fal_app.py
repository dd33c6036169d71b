"""``fal.app``: the module fal's apps import ``App``, ``AppClient``, ``wrap_app`` and fal's
constants from. ``minifal.app`` holds the App model; ``wrap_app`` serves an App, so it lives with
the runner (``minifal.runner.wrap_app``), and this module joins the two at fal's path without
the App model importing the runner."""

from minifal.app import *  # noqa: F403 (fal.app's names, as minifal.app lists them)
from minifal.app import __all__ as _app_names
from minifal.runner.wrap_app import wrap_app

__all__ = [*_app_names, "wrap_app"]
