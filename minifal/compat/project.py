"""fal's project file: apps named in ``[tool.fal.apps]`` of a ``pyproject.toml``.

```toml
[tool.fal.apps.my-app]
ref = "src/app.py::MyApp"        # or python_entry_point = "package.module:MyApp"
keep_alive = 300                 # any App setting; auth = "private"; name = "public-name"
```

``minifal run`` with no app serves every app of the table, behind one gateway.

``minifal run my-app`` (and ``serve``, ``dockerfile``) finds the file as fal's CLI does: from
the current directory up, the first directory that has a ``.git`` or a ``pyproject.toml`` with a
``[tool.fal]`` table is the project root, and its ``pyproject.toml`` is read. ``ref`` is relative
to that root. As with ``fal deploy``, the table's ``name`` (default: its key) and ``auth`` win over
the class; other settings apply where the class leaves fal's default. Keys that only mean
something to fal's platform are accepted and listed in the log.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minifal.container import ContainerImage
from minifal.settings import AppSettings

logger = logging.getLogger("minifal.compat.project")

PYPROJECT = "pyproject.toml"

# fal's [tool.fal.apps.X] keys that are App settings here, under the same name.
SETTING_KEYS = frozenset(
    {
        "min_concurrency",
        "max_concurrency",
        "max_multiplexing",
        "concurrency_buffer",
        "concurrency_buffer_perc",
        "scaling_delay",
        "request_timeout",
        "request_start_timeout",
        "startup_timeout",
        "keep_alive",
        "machine_type",
        "num_gpus",
        "regions",
        "app_files",
        "app_files_ignore",
        "app_files_context_dir",
        "termination_grace_period_seconds",
        "secrets",
        "data_mounts",
        "requirements",
        "requirements_context_dir",
        "python_version",
        "metrics_port",
        "skip_retry_conditions",
        "retry_config",
    }
)
# Keys that set an App setting of another name, and win over the class (as on ``fal deploy``).
WINNING_KEYS = {"name": "app_name", "auth": "app_auth"}
# Keys for fal's platform only (deploys, teams, its scheduler): accepted, no local effect.
PLATFORM_KEYS = frozenset(
    {
        "deployment_strategy",
        "team",
        "private_logs",
        "exposed_port",
        "_scheduler",
        "_scheduler_options",
        "health_check",
        "app_scale_settings",
        "no_scale",
    }
)
IMAGE_KEYS = frozenset({"dockerfile", "image", "build_args", "secrets", "registries"})
IMAGE_COMMAND_KEYS = frozenset({"entrypoint", "cmd"})
PROJECT_RELATIVE_DIRS = ("app_files_context_dir", "requirements_context_dir")
_DEFAULTS = AppSettings()


class ProjectError(ValueError):
    """The project file is missing, or does not describe the app as fal expects."""


def is_app_name(reference: str) -> bool:
    """fal's rule: a reference without ``::`` that is not a ``.py`` file names a project app."""
    return "::" not in reference and not reference.endswith(".py")


def absolute_reference(reference: str) -> str:
    """A file reference made absolute (``minifal deploy`` may run in another directory than
    the gateway); a project app's name as it is."""
    if is_app_name(reference):
        return reference
    file_part, separator, class_name = reference.partition("::")
    return os.path.abspath(file_part) + separator + class_name


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProjectError(f"cannot read {path}: {exc}") from None


def find_project_root(start: Path | None = None) -> Path:
    """The first directory from ``start`` (default: the current one) up with a ``.git`` or a
    ``pyproject.toml`` that has ``[tool.fal]``; the file system root when none has."""
    start = (start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
        pyproject = directory / PYPROJECT
        if pyproject.is_file() and "fal" in _read_toml(pyproject).get("tool", {}):
            return directory
    return Path(start.anchor)


def find_pyproject_toml(start: Path | None = None) -> Path | None:
    candidate = find_project_root(start) / PYPROJECT
    return candidate if candidate.is_file() else None


@dataclass(frozen=True)
class ProjectApp:
    """One ``[tool.fal.apps.<key>]`` table, resolved against its project root."""

    key: str
    pyproject: Path
    ref: str | None
    """``/abs/path/file.py[::Class]``."""
    python_entry_point: str | None
    """``module:symbol``, imported with the project root on ``sys.path``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """App settings from the table (fal's key names mapped to minifal's)."""
    platform_only: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.pyproject.parent

    def apply_to(self, app_class: Any) -> None:
        """Give ``app_class`` the table's settings: ``name`` and ``auth`` always, the others
        where the class has fal's default."""
        current = app_class.settings()
        overrides = {
            setting: value
            for setting, value in self.settings.items()
            if setting in WINNING_KEYS.values()
            or getattr(current, setting) == getattr(_DEFAULTS, setting)
        }
        if overrides:
            app_class.override_settings(overrides)
        if self.platform_only:
            logger.info(
                "[tool.fal.apps.%s]: %s apply on fal's platform only",
                self.key,
                ", ".join(sorted(self.platform_only)),
            )


def load_project_app(key: str, start: Path | None = None) -> ProjectApp:
    """The app named ``key`` in the project's ``pyproject.toml`` (see the module docstring)."""
    pyproject = find_pyproject_toml(start)
    if pyproject is None:
        raise ProjectError(
            f"{key!r} is not a .py file and no pyproject.toml with [tool.fal] was found from "
            f"{(start or Path.cwd()).resolve()} up: pass path/to/app.py[::Class]"
        )
    fal_table = {
        name.replace("--", "").replace("-", "_"): value
        for name, value in _read_toml(pyproject).get("tool", {}).get("fal", {}).items()
    }
    apps = fal_table.get("apps", {})
    if key not in apps:
        known = ", ".join(sorted(apps)) or "none"
        raise ProjectError(f"App {key} not found in {pyproject} (apps: {known})")
    if not isinstance(apps[key], dict):
        raise ProjectError(f"[tool.fal.apps.{key}] must be a table in {pyproject}")
    return _resolve(key, pyproject, dict(apps[key]))


def project_app_names(start: Path | None = None) -> list[str]:
    """The names of every ``[tool.fal.apps]`` table of the project, in the file's order."""
    pyproject = find_pyproject_toml(start)
    if pyproject is None:
        raise ProjectError(
            f"no app given and no pyproject.toml with [tool.fal] was found from "
            f"{(start or Path.cwd()).resolve()} up: pass path/to/app.py[::Class] or app names"
        )
    apps = _read_toml(pyproject).get("tool", {}).get("fal", {}).get("apps", {})
    if not isinstance(apps, dict) or not apps:
        raise ProjectError(f"no app given and {pyproject} has no [tool.fal.apps.NAME] table")
    return list(apps)


def _resolve(key: str, pyproject: Path, table: dict[str, Any]) -> ProjectApp:
    root = pyproject.parent
    ref = table.pop("ref", None)
    entry_point = table.pop("python_entry_point", None)
    if ref is not None and entry_point is not None:
        raise ProjectError(f"App {key} cannot have both ref and python_entry_point keys")
    if ref is None and entry_point is None:
        raise ProjectError(
            f"App {key} does not have a ref key in {pyproject}: minifal runs Python apps "
            '(ref = "path/to/file.py::Class" or python_entry_point = "module:Class")'
        )
    for name, value in (("ref", ref), ("python_entry_point", entry_point)):
        if value is not None and not (isinstance(value, str) and value):
            raise ProjectError(f"App {key} {name} must be a string in {pyproject}")
    if entry_point is not None and not _is_entry_point(entry_point):
        raise ProjectError("python_entry_point must be in '<module>:<symbol>' format.")

    settings: dict[str, Any] = {"app_name": table.pop("name", key)}
    platform_only: dict[str, Any] = {}
    if "auth" in table:
        settings["app_auth"] = table.pop("auth")
    image = table.pop("image", None)
    if image is not None:
        settings["image"] = _container_image(key, image, root)
        settings["kind"] = "container"
    for name in list(table):
        if name in SETTING_KEYS:
            settings[name] = table.pop(name)
        elif name in PLATFORM_KEYS:
            platform_only[name] = table.pop(name)
    if table:
        raise ProjectError(f"Found unexpected keys in pyproject.toml: {table}")
    for name in PROJECT_RELATIVE_DIRS:
        if isinstance(settings.get(name), str):
            settings[name] = str(root / settings[name])
    return ProjectApp(
        key=key,
        pyproject=pyproject,
        ref=str(root / ref) if ref is not None else None,
        python_entry_point=entry_point,
        settings=settings,
        platform_only=platform_only,
    )


def _is_entry_point(value: str) -> bool:
    module, _, symbol = value.partition(":")
    return bool(module and symbol)


def _container_image(key: str, image: object, root: Path) -> ContainerImage:
    """``image = {dockerfile = "Dockerfile", build_args = {...}}`` (relative to the project
    root, the build context); ``image = {image = "repo/name:tag"}`` is ``FROM repo/name:tag``."""
    if not isinstance(image, dict):
        raise ProjectError(f"App {key} image must be a table in pyproject.toml")
    options = dict(image)
    unknown = set(options) - IMAGE_KEYS - IMAGE_COMMAND_KEYS
    if unknown:
        raise ProjectError(f"Found unexpected keys in app {key} image: {sorted(unknown)}")
    dockerfile, reference = options.pop("dockerfile", None), options.pop("image", None)
    if (dockerfile is None) == (reference is None):
        raise ProjectError(
            f"App {key} image must specify exactly one of 'dockerfile' (path) or 'image' "
            "(container image) in pyproject.toml"
        )
    if dockerfile is not None:
        path = root / str(dockerfile)
        if not path.is_file():
            raise ProjectError(f"App {key} image.dockerfile not found: {path}")
        text = path.read_text()
    elif "build_args" in options or "secrets" in options:
        raise ProjectError(
            "Image key(s) 'build_args', 'secrets' are only supported with image.dockerfile"
        )
    else:
        text = f"FROM {reference}\n"
    try:
        return ContainerImage.from_dockerfile_str(text, context_dir=root, **options)
    except (TypeError, ValueError) as exc:
        raise ProjectError(f"App {key} image: {exc}") from None
