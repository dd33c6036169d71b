"""Where the shared, persistent data dir ("/data" on fal) lives on this machine.

On a cluster (``minifal run --ray``) every node must see the same data dir (NFS, Lustre...):
the gateway leaves a marker in it and each runner reads it back (``shared_dir_problem``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from minifal.host import envs
from minifal.runner_contract import data_dir_environment, export_to_process

FAL_DEFAULT = Path("/data")
LOCAL_DEFAULT = Path(".minifal/data")
MARKER_NAME = "data-dir-marker"
"""In ``DATA_DIR/runs/<run>/``: a token the gateway writes and its runners read back."""


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, ``$MINIFAL_DATA_DIR``, a writable ``/data``, else ``./.minifal/data``."""
    if explicit:
        return Path(explicit).absolute()
    configured = envs.DATA_DIR.get()
    if configured is not None:
        return configured.absolute()
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
    export_to_process(data_dir_environment(path))
    return path


def data_dir() -> Path:
    """The data dir of the current process (as activated by the runner or the CLI)."""
    return resolve_data_dir()


def _marker_file(path: Path, run_id: str) -> Path:
    return path / "runs" / run_id / MARKER_NAME


def leave_marker(path: Path, run_id: str) -> str:
    """Write a fresh token for run ``run_id`` into the data dir; returns it."""
    token = secrets.token_hex(16)
    marker = _marker_file(path, run_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(token)
    return token


def shared_dir_problem(path: Path, run_id: str, token: str) -> str | None:
    """None when ``path`` here holds the gateway's marker ``token``; else why it is another
    data dir than the gateway's (a node that does not mount the shared filesystem)."""
    try:
        seen = _marker_file(path, run_id).read_text()
    except OSError:
        seen = None
    if seen == token:
        return None
    what = "no marker" if seen is None else "another marker"
    return (
        f"{path} holds {what} of run {run_id}: this node sees another data dir than the "
        "gateway's (DATA_DIR must be a shared filesystem on a cluster; compiled kernels, "
        "files and startup events written here are not the gateway's)"
    )
