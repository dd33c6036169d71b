"""The ``PYTHONPATH`` of a child process a test starts: this checkout first, then whatever the
test's own process was given (the GPU machine puts the web stack's wheels there)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def repo_pythonpath() -> str:
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
