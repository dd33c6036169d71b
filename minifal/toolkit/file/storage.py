"""Where the files apps return live: ``DATA_DIR/files/<random id>/<name>``, served at ``/files/``.

minifal has no CDN. A stored file gets the URL ``<public base URL>files/<id>/<name>``, which
every runner serves (the runner maps the path back with :func:`resolve_stored_file`); because the
data dir is shared, any runner can serve a file another one wrote.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from minifal.host.data_dir import data_dir
from minifal.request_context import public_base_url
from minifal.toolkit.downloads import write_atomically


def files_root() -> Path:
    """The directory holding the files served under ``/files/``."""
    return data_dir() / "files"


def resolve_stored_file(relative: str) -> Path | None:
    """Map the decoded URL path below ``/files/`` to a stored file, or ``None`` if there is none.

    Refuses anything that could leave :func:`files_root`: absolute paths, ``..``, backslashes,
    NUL, and symlinks resolving outside it. Hidden names are refused too, which keeps files still
    being written (``.<name>.part``) out of reach.
    """
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    root = files_root().resolve()
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def new_stored_path(file_name: str) -> Path:
    """A fresh ``files_root()/<random id>/<file_name>`` path (its directory created, no file)."""
    directory = files_root() / secrets.token_hex(16)
    directory.mkdir(parents=True)
    return directory / file_name


def store_chunks(file_name: str, chunks: Iterable[bytes]) -> Path:
    """Write a new stored file (through a temp file and a rename) and return its path."""
    target = new_stored_path(file_name)
    write_atomically(target, chunks)
    return target


def discard_stored_path(path: Path) -> None:
    """Remove a stored file's private directory (a reservation given up)."""
    shutil.rmtree(path.parent, ignore_errors=True)


def read_chunks(path: Path, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(chunk_size):
            yield chunk


def public_url(stored_path: Path) -> str:
    """The URL a client fetches ``stored_path`` at."""
    relative = stored_path.relative_to(files_root())
    return public_base_url() + "files/" + "/".join(quote(part) for part in relative.parts)
