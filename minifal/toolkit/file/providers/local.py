"""``fal.toolkit.file.providers.local``: minifal's own repository, the shared data dir.

On fal, ``LocalFileRepository`` hands uploads to a node-local service that forwards them to the
CDN. Here it is the data-dir store itself (``DATA_DIR/files``, served by every runner), which is
what every fal-hosted repository name means locally. It can reserve a URL before the bytes
exist (``File.reserve``): the URL is final, and fetching it answers 404 until ``complete``.

fal's upload policies (a caller-chosen destination, sent in a request header) need fal's
storage service; the two helpers that apply them raise :class:`FileUploadException`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minifal.toolkit.downloads import write_atomically
from minifal.toolkit.exceptions import FileUploadException
from minifal.toolkit.file.storage import (
    discard_stored_path,
    new_stored_path,
    public_url,
    read_chunks,
    store_chunks,
)
from minifal.toolkit.file.types import FileData, FileRepository, Reservation

UPLOAD_POLICIES_UNSUPPORTED = (
    "upload policies (a destination chosen by the caller) need fal's storage service; "
    "minifal stores every output under DATA_DIR/files"
)


@dataclass
class LocalFileRepository(FileRepository):
    """Store files under ``DATA_DIR/files`` and hand out the runner's ``/files/...`` URL."""

    def save(
        self,
        data: FileData,
        multipart: bool | None = None,
        multipart_threshold: int | None = None,
        multipart_chunk_size: int | None = None,
        multipart_max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
        wait_for_completion: bool = False,
    ) -> str:
        url, _ = self.store_bytes(data)
        return url

    def store_bytes(self, data: FileData) -> tuple[str, Path]:
        """Store ``data`` under its file name; its URL and stored path."""
        stored = store_chunks(data.file_name, [data.data])
        return public_url(stored), stored

    def save_file(
        self,
        file_path: str | Path,
        content_type: str,
        multipart: bool | None = None,
        multipart_threshold: int | None = None,
        multipart_chunk_size: int | None = None,
        multipart_max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
        wait_for_completion: bool = False,
    ) -> tuple[str, FileData | None]:
        """Copy the file in chunks (never read whole); no ``FileData`` comes back."""
        url, _ = self.store_path(Path(file_path), Path(file_path).name)
        return url, None

    def store_path(self, source: Path, file_name: str) -> tuple[str, Path]:
        """Copy ``source`` into the store as ``file_name``; its URL and stored path."""
        stored = store_chunks(file_name, read_chunks(source))
        return public_url(stored), stored

    def reserve(
        self,
        file_name: str,
        content_type: str,
        object_lifecycle_preference: dict[str, str] | None = None,
        request: Any = None,
        extra_headers: dict[str, str] | None = None,
    ) -> Reservation:
        target = new_stored_path(file_name)

        def complete(content: bytes | Path) -> None:
            chunks = [content] if isinstance(content, bytes) else read_chunks(Path(content))
            write_atomically(target, chunks)

        return Reservation(public_url(target), complete, lambda: discard_stored_path(target))


def reserve_with_policy(
    policy: Any, file_name: str, content_type: str, request: Any = None
) -> Reservation:
    raise FileUploadException(UPLOAD_POLICIES_UNSUPPORTED)


def save_with_policy(policy: Any, file_name: str, data: bytes | Path, content_type: str) -> str:
    raise FileUploadException(UPLOAD_POLICIES_UNSUPPORTED)


__all__ = ["LocalFileRepository", "reserve_with_policy", "save_with_policy"]
