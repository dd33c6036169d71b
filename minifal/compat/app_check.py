"""``minifal check APP``: would this app load on minifal, and if not, whose problem is it?

The app is loaded as the gateway loads it (``runner.app_manifest.build_manifest``: import, App
class, settings, routes, OpenAPI; never ``setup()``), after a static pass over its file's
``fal`` imports. Each problem is a ``Finding`` of one kind:

- ``minifal gap``: a fal module or name the app imports that minifal does not have (the static
  pass lists every one, not only the first the import trips on);
- ``app dependency``: a module the app imports that is not installed here. It would fail
  ``fal run`` on this machine too: install it (the App's ``requirements`` say what fal would);
- ``app error``: anything else that stops the load: an exception in the app's module code, no
  App class, a bad setting, an endpoint type without a JSON schema (fal refuses those too).

Requirements the App declares but this environment lacks are notes: the load does not need
them, ``setup()`` most likely does.
"""

from __future__ import annotations

import ast
import importlib
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from minifal.compat.fal_alias import install_fal_alias, target_module
from minifal.compat.requirements_check import unmet_requirements

Kind = Literal["minifal gap", "app dependency", "app error"]
GAP: Kind = "minifal gap"
DEPENDENCY: Kind = "app dependency"
APP_ERROR: Kind = "app error"


@dataclass(frozen=True)
class Finding:
    kind: Kind
    message: str
    where: str = ""
    """``file:line`` in the app, when known."""

    def line(self) -> str:
        suffix = f"  [{self.where}]" if self.where else ""
        return f"{self.kind}: {self.message}{suffix}"


@dataclass
class CheckReport:
    reference: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loaded: str = ""
    """What loaded (class, app name, routes), empty when the load failed."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def lines(self) -> list[str]:
        lines = [f"minifal check {self.reference}"]
        if self.loaded:
            lines.append(f"  loaded: {self.loaded}")
        lines += [f"  {finding.line()}" for finding in self.findings]
        lines += [f"  note: {note}" for note in self.notes]
        if self.ok:
            lines.append("  nothing stops it on minifal")
        else:
            kinds = sorted({finding.kind for finding in self.findings})
            lines.append(f"  {len(self.findings)} problem(s): {', '.join(kinds)}")
        return lines


# -- the static pass: every fal import of the file ---------------------------------------------


def _minifal_has(fal_module: str, name: str | None) -> bool:
    target = target_module(fal_module)
    if target is None:
        return False
    try:
        module = importlib.import_module(target)
    except ImportError:
        return False
    if name is None or hasattr(module, name):
        return True
    try:  # ``from fal.toolkit import image``: a submodule
        importlib.import_module(f"{target}.{name}")
    except ImportError:
        return False
    return True


def fal_import_gaps(source: str, filename: str) -> list[Finding]:
    """A finding per fal module or name the source imports that minifal lacks."""
    install_fal_alias()
    findings = []
    for node in ast.walk(ast.parse(source, filename)):
        wanted: list[tuple[str, str | None]] = []
        if isinstance(node, ast.Import):
            wanted = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            wanted = [(node.module, alias.name) for alias in node.names if alias.name != "*"]
        for module, name in wanted:
            if module != "fal" and not module.startswith("fal."):
                continue
            if _minifal_has(module, name):
                continue
            what = f"module {module}" if name is None else f"{module}.{name}"
            if name is not None and not _minifal_has(module, None):
                what = f"module {module}"
            findings.append(Finding(GAP, f"{what} is not in minifal", f"{filename}:{node.lineno}"))
    first_of_each: dict[str, Finding] = {}
    for finding in findings:  # a module imported in several places: its first line
        first_of_each.setdefault(finding.message, finding)
    return list(first_of_each.values())


# -- the load, as the gateway does it ----------------------------------------------------------


def _where(exc: BaseException, app_file: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == app_file]
    return f"{app_file.name}:{frames[-1].lineno}" if frames else ""


def _is_fal_module(name: str) -> bool:
    return name == "fal" or name.startswith(("fal.", "minifal"))


def classify(exc: BaseException, app_file: Path) -> Finding:
    """What kind of problem an exception raised while loading the app is."""
    where = _where(exc, app_file)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        if _is_fal_module(exc.name):
            return Finding(GAP, f"module {exc.name} is not in minifal", where)
        top = exc.name.split(".")[0]
        return Finding(
            DEPENDENCY,
            f"No module named {exc.name!r}: install it (pip install {top}, or the package "
            "that provides it); `fal run` fails the same way without it",
            where,
        )
    if isinstance(exc, ImportError) and exc.name and _is_fal_module(exc.name):
        return Finding(GAP, f"{exc} (a fal name minifal lacks)", where)
    if isinstance(exc, AttributeError):
        owner = getattr(exc, "obj", None)
        module_name = getattr(owner, "__name__", "") if owner is not None else ""
        if isinstance(module_name, str) and module_name.startswith("minifal"):
            fal_name = "fal" + module_name[len("minifal") :]
            return Finding(GAP, f"{fal_name}.{exc.name} is not in minifal", where)
    return Finding(APP_ERROR, f"{type(exc).__name__}: {exc}", where)


class _WarningsOf(logging.Handler):
    """The warnings a logger emits inside a ``with`` block (a near-miss setting name...)."""

    def __init__(self, logger_name: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(logger_name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> None:
        self.logger.addHandler(self)

    def __exit__(self, *exc_info: object) -> None:
        self.logger.removeHandler(self)


def check_app(reference: str) -> CheckReport:
    """Check ``path/to/app.py[::Class]`` (or a project app's name) without running setup()."""
    from minifal.runner.app_loader import split_app_reference
    from minifal.runner.app_manifest import build_manifest

    report = CheckReport(reference)
    path, _ = split_app_reference(reference)
    if path.suffix == ".py" and path.is_file():
        report.findings += fal_import_gaps(path.read_text(), path.name)
    warnings = _WarningsOf("minifal.app")
    try:
        with warnings:
            manifest = build_manifest(reference)
    except Exception as exc:
        finding = classify(exc, path.resolve())
        if finding not in report.findings and not (
            finding.kind == GAP and any(f.kind == GAP for f in report.findings)
        ):
            report.findings.append(finding)
        return report
    routes = ", ".join(
        endpoint["path"] + ("" if endpoint["kind"] == "http" else f" ({endpoint['kind']})")
        for endpoint in manifest["endpoints"]
    )
    report.loaded = f"{manifest['class_name']} (app name {manifest['app_name']}); routes: {routes}"
    report.notes += warnings.messages
    for problem in unmet_requirements(manifest["settings"]["requirements"]):
        report.notes.append(f"requirement not installed here (setup() may need it): {problem}")
    return report
