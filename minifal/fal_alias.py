"""Make ``import fal`` (and ``fal.toolkit``, ``fal.exceptions``...) resolve to minifal.

App files written for fal import ``fal``. When the real ``fal`` package is installed, it wins and
nothing here happens: minifal never shadows it. Otherwise a meta-path finder maps every module
``fal.X`` to ``minifal.X``, so ``fal.App is minifal.App`` and isinstance checks agree.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

ALIAS = "fal"
TARGET = "minifal"


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
        target_name = TARGET + fullname[len(ALIAS) :]
        if importlib.util.find_spec(target_name) is None:
            return None
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
