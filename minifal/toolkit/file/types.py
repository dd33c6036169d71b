"""``fal.toolkit.file.types``: the bytes of a file to store, and the repository protocol.

A repository turns :class:`FileData` into a URL. minifal's repositories are the data dir
(``minifal.toolkit.file.providers.local``) and ``data:`` URLs (``InMemoryRepository``); fal's
hosted and cloud repositories map onto them, cloud buckets as directories of the data dir (see
``docs/fal-compatibility.md``).
"""

from __future__ import annotations

import mimetypes
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_FILE_NAME_BYTES = 200
"""Longer names are replaced by a generated one (most filesystems stop at 255 bytes)."""

RepositoryId = Literal["fal", "fal_v2", "fal_v3", "in_memory", "gcp_storage", "r2", "cdn", "local"]


class FileData:
    """Bytes with a content type and a file name, each filled in from the other when missing.

    Unlike fal, the name is sanitised (last path component, no control characters or leading
    dots, at most 200 bytes): it becomes a path under the data dir.
    """

    data: bytes
    content_type: str
    file_name: str

    def __init__(
        self, data: bytes, content_type: str | None = None, file_name: str | None = None
    ) -> None:
        self.data = data
        self.file_name, self.content_type = name_and_type(file_name, content_type)


def name_and_type(file_name: str | None, content_type: str | None) -> tuple[str, str]:
    """Fill in whichever of the name and the mime type is missing, from the other one."""
    safe_name = safe_file_name(file_name)
    if content_type is None:
        guessed = mimetypes.guess_type(safe_name)[0] if safe_name else None
        content_type = guessed or DEFAULT_CONTENT_TYPE
    if safe_name is None:
        extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
        safe_name = secrets.token_hex(8) + extension
    return safe_name, content_type


def safe_file_name(file_name: str | None) -> str | None:
    """The last path component, without control characters or leading dots; ``None`` if empty."""
    if not file_name:
        return None
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".")
    if not name or len(name.encode()) > MAX_FILE_NAME_BYTES:
        return None
    return name


def _nothing_to_abort() -> None:
    """A reservation that holds nothing needs no clean-up."""


@dataclass(frozen=True)
class Reservation:
    """A URL handed out before its bytes exist, and how to send or drop them."""

    url: str
    complete: Callable[[bytes | Path], object]
    abort: Callable[[], None] = field(default=_nothing_to_abort)
    cdn_signing_requested: bool = False


@dataclass
class FileRepository:
    """Where ``File.from_bytes`` / ``from_path`` put bytes; subclasses implement :meth:`save`."""

    def reserve(
        self,
        file_name: str,
        content_type: str,
        object_lifecycle_preference: dict[str, str] | None = None,
        request: Any = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Reservation:
        raise NotImplementedError(f"{type(self).__name__} cannot hand out a URL before the upload")

    def save(
        self,
        data: FileData,
        multipart: bool | None = None,
        multipart_threshold: int | None = None,
        multipart_chunk_size: int | None = None,
        multipart_max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
    ) -> str:
        raise NotImplementedError

    def save_file(
        self,
        file_path: str | Path,
        content_type: str,
        multipart: bool | None = None,
        multipart_threshold: int | None = None,
        multipart_chunk_size: int | None = None,
        multipart_max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
    ) -> tuple[str, FileData | None]:
        """Store the file at ``file_path``; its URL and, when it was read whole, its data."""
        path = Path(file_path)
        data = FileData(path.read_bytes(), content_type, path.name)
        return self.save(data, object_lifecycle_preference=object_lifecycle_preference), data


__all__ = ["FileData", "FileRepository", "RepositoryId", "Reservation"]
