"""Find the App class named by ``path/to/file.py[::ClassName]`` or a project app's name.

A reference that is not a ``.py`` file and has no ``::`` names an app of the project's
``pyproject.toml`` (``[tool.fal.apps.<name>]``, see ``minifal.compat.project``), as in fal's CLI.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path

from minifal.app import App
from minifal.compat.app_environment import environment_note, environment_summary
from minifal.compat.fal_alias import install_fal_alias
from minifal.compat.functions import LocalFunction
from minifal.compat.project import ProjectApp, ProjectError, is_app_name, load_project_app
from minifal.host import envs

logger = logging.getLogger("minifal.runner.app_loader")


class AppLoadError(Exception):
    """The app reference does not name exactly one App class in an importable file."""


def split_app_reference(reference: str) -> tuple[Path, str | None]:
    file_part, _, class_name = reference.partition("::")
    return Path(file_part), (class_name or None)


def load_app_class(reference: str) -> type[App]:
    """The App class of a file reference or a project app, with the project's settings; logs
    where it runs when it declares a container image."""
    if is_app_name(reference):
        app_class = _load_project_app(reference)
    else:
        app_class = _load_from_file(reference)
    settings = app_class.settings()
    if settings.image is not None or settings.kind == "container":
        summary = environment_summary(settings.kind, settings.image)
        logger.warning("%s", environment_note(app_class.resolved_app_name(), summary))
    return app_class


def _load_project_app(name: str) -> type[App]:
    try:
        project_app = load_project_app(name)
    except ProjectError as exc:
        raise AppLoadError(str(exc)) from None
    if project_app.ref is not None:
        app_class = _load_from_file(project_app.ref)
    else:
        app_class = _load_entry_point(project_app)
    project_app.apply_to(app_class)
    return app_class


def _load_entry_point(project_app: ProjectApp) -> type[App]:
    """``python_entry_point = "module:symbol"``, imported with the project root on the path."""
    assert project_app.python_entry_point is not None
    module_name, _, symbol = project_app.python_entry_point.partition(":")
    install_fal_alias()
    root = str(project_app.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import {module_name!r} (python_entry_point): {exc}") from None
    return _as_app_class(Path(module_name), symbol, getattr(module, symbol, None))


def _load_from_file(reference: str) -> type[App]:
    """Import the file as a module (its directory goes first on ``sys.path``) and pick the App.

    With ``MINIFAL_APP_SOURCE`` the module's code comes from that copy of the file (the
    revision a fleet's runner serves), its ``__file__`` and directory stay the file's."""
    path, class_name = split_app_reference(reference)
    if not path.is_file():
        raise AppLoadError(f"app file not found: {path}")
    if not install_fal_alias():
        logger.info("the real 'fal' package is installed: 'import fal' in the app imports it")
    path = path.resolve()
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    _append_working_directory()
    module_name = f"minifal_app_{path.stem}"
    source = envs.APP_SOURCE.raw()
    loader = importlib.machinery.SourceFileLoader(module_name, source) if source else None
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)

    candidates = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type) and value.__module__ == module_name
    }
    if class_name is not None:
        chosen = candidates.get(class_name) or getattr(module, class_name, None)
        if chosen is None:
            raise AppLoadError(f"{path} has no class {class_name!r}")
        return _as_app_class(path, class_name, chosen)
    apps = [value for value in candidates.values() if issubclass(value, App)]
    if len(apps) == 1:
        return apps[0]
    if not apps:
        foreign = [name for name, value in candidates.items() if _looks_like_fal_app(value)]
        if foreign:
            raise AppLoadError(_not_an_app_message(path, foreign[0], candidates[foreign[0]]))
        raise AppLoadError(f"{path} defines no App subclass")
    names = ", ".join(sorted(app.__name__ for app in apps))
    raise AppLoadError(f"{path} defines several Apps ({names}): name one as {path}::ClassName")


def _append_working_directory() -> None:
    """fal's CLI appends the working directory to ``sys.path``: an app that imports a package
    beside where it is started from loads under every command (``python -m`` puts it first
    anyway; a console script such as ``minifal serve`` does not)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _as_app_class(path: Path, name: str, value: object) -> type[App]:
    """An App class, or the App of ``name = fal.wrap_app(App)``; else a clear error."""
    if isinstance(value, LocalFunction) and value.app_class is not None:
        return value.app_class
    if isinstance(value, type) and issubclass(value, App):
        return value
    raise AppLoadError(_not_an_app_message(path, name, value))


def _looks_like_fal_app(value: type) -> bool:
    return any(base.__module__.split(".")[0] == "fal" for base in value.__mro__[1:])


def _not_an_app_message(path: Path, name: str, value: object) -> str:
    if value is None:
        return f"{path} has no {name!r}"
    if isinstance(value, LocalFunction):
        return (
            f"{path}::{name} is a fal.function: minifal serves fal.App classes "
            "(call the function, or put it behind an App endpoint)"
        )
    if isinstance(value, type) and _looks_like_fal_app(value):
        return (
            f"{path}::{name} subclasses the real fal.App (the 'fal' package is installed); "
            "minifal serves minifal.App: uninstall 'fal' in this environment or write "
            "'import minifal as fal'"
        )
    return f"{path}::{name} is not a fal.App subclass"
