"""The SD-Turbo app's modules (``apps/``), imported as a runner imports them: ``apps/`` on
``sys.path`` and minifal's ``fal`` alias installed (the app file imports ``fal``). A test file
calls ``pytest.importorskip`` for torch and diffusers before it imports this."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from minifal.compat.fal_alias import install_fal_alias

APPS_DIR = Path(__file__).resolve().parent.parent / "apps"
sys.path.insert(0, str(APPS_DIR))
install_fal_alias()


def app_module(name: str) -> ModuleType:
    """``apps/<name>.py``."""
    return importlib.import_module(name)
