"""Make ``import fal`` (and ``fal.toolkit``, ``fal.exceptions``...) resolve to minifal.

App files written for fal import ``fal``. When the real ``fal`` package is installed, it wins and
nothing here happens: minifal never shadows it. Otherwise a meta-path finder maps fal's own module
paths to the minifal modules that implement them (``fal.sync`` -> ``minifal.compat.sync``), so
``fal.App is minifal.App`` and isinstance checks agree. Only fal's paths answer: minifal's
internals (``fal.fleet``, ``fal.compiled``) are not fal modules and do not import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

ALIAS = "fal"

FAL_MODULES = {
    "fal": "minifal",
    "fal.app": "minifal.compat.fal_app",
    "fal.container": "minifal.container",
    "fal.project": "minifal.compat.project",
    "fal.realtime": "minifal.realtime",
    "fal.ref": "minifal.ref",
    "fal.sync": "minifal.compat.sync",
}
"""fal's modules that minifal implements, each at the minifal module that does."""

FAL_PACKAGES = {
    "fal.distributed": "minifal.distributed",
    "fal.exceptions": "minifal.exceptions",
    "fal.toolkit": "minifal.toolkit",
}
"""fal's packages that minifal implements with the same submodule layout."""


def target_module(fullname: str) -> str | None:
    """The minifal module that serves fal's module ``fullname``, or None when fal has none here."""
    if fullname in FAL_MODULES:
        return FAL_MODULES[fullname]
    for package, target in FAL_PACKAGES.items():
        if fullname == package or fullname.startswith(package + "."):
            return target + fullname[len(package) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed by ``import_module``."""


class FalAliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        target_name = target_module(fullname)
        if target_name is None or importlib.util.find_spec(target_name) is None:
            # Answered here rather than left to the path finder, which would find minifal's own
            # files under fal's __path__ and load them a second time as 'fal.*' modules.
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target_name))


def real_fal_installed() -> bool:
    if any(isinstance(finder, FalAliasFinder) for finder in sys.meta_path):
        return False
    return importlib.util.find_spec(ALIAS) is not None


def install_fal_alias() -> bool:
    """Install the alias unless a real ``fal`` is importable; True when minifal serves ``fal``."""
    if any(isinstance(finder, FalAliasFinder) for finder in sys.meta_path):
        return True
    if importlib.util.find_spec(ALIAS) is not None:
        return False
    # First in line: fal's __path__ is minifal's directory, so the ordinary path finder would
    # otherwise load minifal's files a second time under 'fal.*' names, as distinct classes.
    sys.meta_path.insert(0, FalAliasFinder())
    return True
