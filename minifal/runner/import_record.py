"""The modules an App's runner had imported once it was ready, kept for the next fleet's fork
server (``fork_server.py``), which imports them before it forks runners.

A record is one module name per line under ``<data dir>/runner-imports/``, one file per App
file and Python executable. Only modules found on the library path count: the standard
library, site-packages and ``PYTHONPATH`` (``sys.path`` as the process started, before the App's
own directory was put first). The App's files and generated code (Inductor's modules in a cache
dir) are left out: they may do anything at import, and the runner imports them itself.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

RECORDS_DIR_NAME = "runner-imports"


def record_path(data_dir: Path, app_reference: str) -> Path:
    """Where the record of ``app_reference``'s imports lives (its file, this Python)."""
    app_file = app_reference.split("::", 1)[0]
    identity = f"{os.path.abspath(app_file)}\0{sys.executable}\0{sys.version}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return data_dir / RECORDS_DIR_NAME / f"{digest}.txt"


def library_modules(
    modules: Mapping[str, ModuleType | None], library_path: Iterable[str]
) -> list[str]:
    """The names in ``modules`` that import by name from ``library_path``, sorted.

    Built-in and frozen modules count; a module whose spec names another module (an alias),
    has no file, or lives outside ``library_path`` does not.
    """
    roots = tuple(os.path.join(os.path.abspath(entry), "") for entry in library_path if entry)
    names = []
    for name, module in modules.items():
        spec = getattr(module, "__spec__", None)
        if spec is None or spec.name != name or name == "__main__":
            continue
        origin = spec.origin
        if origin in ("built-in", "frozen") or (
            isinstance(origin, str) and os.path.abspath(origin).startswith(roots)
        ):
            names.append(name)
    return sorted(names)


def write_record(path: Path, names: list[str]) -> bool:
    """Replace the record at ``path`` with ``names`` (atomically); False when it was unchanged."""
    text = "".join(f"{name}\n" for name in names)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
    return True


def read_record(path: Path) -> list[str]:
    """The names in the record at ``path``; none when there is none yet."""
    try:
        return [line for line in path.read_text().splitlines() if line]
    except OSError:
        return []
