"""fal's semantics that are not a module of fal's own: the ``fal`` import alias, the
compatibility table, ``fal.function`` / ``fal.cached`` / ``fal.sync_dir``, ``[tool.fal.apps]``
projects, an App's requirements and container image as fal declares them.

Imported by the package root (fal's top-level names), the runner, the fleet and the CLI. It
imports the App model and ``host/``, never the fleet, a runner's server or the CLI
(``fal.wrap_app``, which serves, is the runner's: ``minifal.runner.wrap_app``).
"""
