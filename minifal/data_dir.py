"""Where the shared, persistent data dir ("/data" on fal) lives on this machine."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from minifal.runner_contract import ENV_DATA_DIR

FAL_DEFAULT = Path("/data")
LOCAL_DEFAULT = Path(".minifal/data")


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, ``$MINIFAL_DATA_DIR``, a writable ``/data``, else ``./.minifal/data``."""
    if explicit:
        return Path(explicit).absolute()
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).absolute()
    if FAL_DEFAULT.is_dir() and os.access(FAL_DEFAULT, os.W_OK | os.X_OK):
        return FAL_DEFAULT
    return LOCAL_DEFAULT.absolute()


def activate_data_dir(path: Path) -> Path:
    """Export the data dir to this process and its children, with fal's ``HF_HOME`` default.

    A data dir we cannot create is not fatal here: the app may still run (the compiled cache and
    file outputs report their own errors).
    """
    with contextlib.suppress(OSError):
        path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_DATA_DIR] = str(path)
    os.environ.setdefault("HF_HOME", str(path / ".cache" / "huggingface"))
    return path


def data_dir() -> Path:
    """The data dir of the current process (as activated by the runner or the CLI)."""
    return resolve_data_dir()
