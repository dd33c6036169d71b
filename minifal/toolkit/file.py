"""``fal.toolkit.File``: a file passed by URL, and where minifal keeps the files apps return.

On fal, ``File.from_bytes`` uploads to fal's CDN and the JSON answer carries the CDN URL. minifal
has no CDN: the default repository (``"local"``) writes the bytes to
``DATA_DIR/files/<random id>/<file name>`` and hands out ``<public base URL>files/<id>/<name>``,
which the runner serves (it maps the path back with :func:`resolve_stored_file`). Because the data
dir is shared by every worker, any worker can serve a file another one wrote. ``"in_memory"``
puts the bytes in a ``data:`` URL instead, as on fal. fal's own repository names (``"fal"``,
``"fal_v2"``, ``"fal_v3"``, ``"cdn"``) are accepted as the local one so fal apps run unchanged.

As an input, a ``File`` field accepts a bare URL string or ``{"url": ...}``; only http(s) and
``data:`` URLs pass validation (anything else is a 422 naming the field). The bytes are fetched
lazily, on :meth:`File.as_bytes`, within the limits of ``minifal.toolkit.url_fetch``.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from minifal.data_dir import data_dir
from minifal.request_context import public_base_url
from minifal.toolkit.downloads import write_atomically
from minifal.toolkit.url_fetch import check_fetchable_url, fetch_bytes

DEFAULT_REPOSITORY = "local"
IN_MEMORY_REPOSITORY = "in_memory"
LOCAL_REPOSITORIES = frozenset({"local", "fal", "fal_v2", "fal_v3", "cdn"})
"""Repository names stored under the data dir: ours, plus fal's hosted ones (no CDN here)."""

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_FILE_NAME_BYTES = 200
"""Longer names are replaced by a generated one (most filesystems stop at 255 bytes)."""


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


class File(BaseModel):
    url: str = Field(description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(
        None, description="The mime type of the file.", examples=["image/png"]
    )
    file_name: str | None = Field(
        None,
        description="The name of the file. It will be auto-generated if not provided.",
        examples=["z9RV14K95DvU.png"],
    )
    file_size: int | None = Field(
        None, description="The size of the file in bytes.", examples=[4404019]
    )

    _file_data: bytes | None = PrivateAttr(None)
    _stored_path: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_url(cls, value: Any) -> Any:
        """Let callers send ``"https://..."`` where ``{"url": "https://..."}`` is expected."""
        if isinstance(value, str):
            return {"url": value}
        return value

    @field_validator("url")
    @classmethod
    def _check_url_scheme(cls, url: str) -> str:
        return check_fetchable_url(url)

    @property
    def file_data(self) -> bytes | None:
        """The bytes, if this process already has them (never part of the JSON)."""
        return self._file_data

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        repository: str = DEFAULT_REPOSITORY,
    ) -> Self:
        """Store ``data`` in ``repository`` and describe it; the bytes stay cached on the result."""
        file_name, content_type = _name_and_type(file_name, content_type)
        if _is_local(repository):
            stored_path = _store_locally(file_name, [data])
            url = _public_url(stored_path)
        else:
            stored_path = None
            url = _data_url(data, content_type)
        file = cls(url=url, content_type=content_type, file_name=file_name, file_size=len(data))
        file._file_data = data
        file._stored_path = stored_path
        return file

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        repository: str = DEFAULT_REPOSITORY,
    ) -> Self:
        """Store a copy of the file at ``path``; a local copy streams, it is never read whole."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"File {source} does not exist")
        file_name, content_type = _name_and_type(source.name, content_type)
        if not _is_local(repository):
            return cls.from_bytes(source.read_bytes(), content_type, file_name, repository)
        stored_path = _store_locally(file_name, _read_chunks(source))
        file = cls(
            url=_public_url(stored_path),
            content_type=content_type,
            file_name=file_name,
            file_size=stored_path.stat().st_size,
        )
        file._stored_path = stored_path
        return file

    def as_bytes(self) -> bytes:
        """The file's bytes, fetched from ``url`` on first use (size-capped) and then cached."""
        if self._file_data is None:
            if self._stored_path is not None:
                self._file_data = self._stored_path.read_bytes()
            else:
                self._file_data = fetch_bytes(self.url)
        return self._file_data

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the file to ``path`` (through a temp file and a rename) and return its path."""
        target = Path(path).resolve()
        if target.exists() and not overwrite:
            raise FileExistsError(f"File {target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, [self.as_bytes()])
        return target


def _is_local(repository: str) -> bool:
    if repository in LOCAL_REPOSITORIES:
        return True
    if repository == IN_MEMORY_REPOSITORY:
        return False
    known = ", ".join(sorted([*LOCAL_REPOSITORIES, IN_MEMORY_REPOSITORY]))
    raise ValueError(f"Unknown file repository {repository!r}; minifal knows: {known}")


def _name_and_type(file_name: str | None, content_type: str | None) -> tuple[str, str]:
    """Fill in whichever of the name and the mime type is missing, from the other one."""
    safe_name = _safe_file_name(file_name)
    if content_type is None:
        guessed = mimetypes.guess_type(safe_name)[0] if safe_name else None
        content_type = guessed or DEFAULT_CONTENT_TYPE
    if safe_name is None:
        extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
        safe_name = secrets.token_hex(8) + extension
    return safe_name, content_type


def _safe_file_name(file_name: str | None) -> str | None:
    """The last path component, without control characters or leading dots; ``None`` if empty."""
    if not file_name:
        return None
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".")
    if not name or len(name.encode()) > MAX_FILE_NAME_BYTES:
        return None
    return name


def _store_locally(file_name: str, chunks: Iterable[bytes]) -> Path:
    """Write a new file under ``files_root()/<random id>/`` and return its final path."""
    directory = files_root() / secrets.token_hex(16)
    directory.mkdir(parents=True)
    target = directory / file_name
    write_atomically(target, chunks)
    return target


def _read_chunks(path: Path, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(chunk_size):
            yield chunk


def _public_url(stored_path: Path) -> str:
    relative = stored_path.relative_to(files_root())
    return public_base_url() + "files/" + "/".join(quote(part) for part in relative.parts)


def _data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
