"""``fal.toolkit.file.providers.local``: minifal's own repository, the shared data dir.

On fal, ``LocalFileRepository`` hands uploads to a node-local service that forwards them to the
CDN. Here it is the data-dir store itself (``DATA_DIR/files``, served by every runner), which is
what every fal-hosted repository name means locally. It can reserve a URL before the bytes
exist (``File.reserve``): the URL is final, and fetching it answers 404 until ``complete``.

fal's upload policies let the caller of a request choose the destination (an S3 pre-signed POST,
sent in a request header): :func:`save_with_policy` and :func:`reserve_with_policy` upload there.
That destination cannot be honoured by a self-hosted server's store, so here they store into the
same data-dir store and return its served URL; the first use in a process logs a warning naming
the destination that was ignored. Nothing is sent to the caller's bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minifal.toolkit.downloads import write_atomically
from minifal.toolkit.file.providers import notice
from minifal.toolkit.file.storage import (
    discard_stored_path,
    new_stored_path,
    public_url,
    read_chunks,
    store_chunks,
)
from minifal.toolkit.file.types import FileData, FileRepository, Reservation, name_and_type


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
    policy: Any, file_name: str, content_type: str, request: Any
) -> Reservation:
    """Reserve a URL in the data-dir store; the policy's destination is ignored (warned once).

    As with :meth:`LocalFileRepository.reserve`, the URL answers 404 until ``complete``.
    """
    _warn_policy_ignored("reserve_with_policy", policy)
    stored_name, _ = name_and_type(file_name, content_type)
    return LocalFileRepository().reserve(stored_name, content_type, request=request)


def save_with_policy(
    policy: Any,
    file_name: str,
    content: bytes | Path,
    content_type: str,
    *,
    name: str | None = None,
    request: Any = None,
) -> str:
    """Store ``content`` (bytes, or a file copied in chunks) in the data-dir store; its URL.

    ``name`` (fal's object key) names the stored file when given, else ``file_name``; either is
    reduced to a safe file name. The policy's destination is ignored (warned once).
    """
    _warn_policy_ignored("save_with_policy", policy)
    stored_name, _ = name_and_type(name or file_name, content_type)
    repository = LocalFileRepository()
    if isinstance(content, bytes):
        url, _ = repository.store_bytes(FileData(content, content_type, stored_name))
    else:
        url, _ = repository.store_path(Path(content), stored_name)
    return url


def _warn_policy_ignored(helper: str, policy: Any) -> None:
    notice.notices.warn(
        "upload-policy",
        f"{helper}: the caller's upload policy ({_describe_policy(policy)}) is ignored: minifal "
        "stores the file under DATA_DIR/files and returns the runner's URL; nothing is sent to "
        "the caller's bucket (logged once per process)",
    )


def _describe_policy(policy: Any) -> str:
    """The destination a policy names: fal's ``UploadPolicy`` (or its JSON) has a url and a key."""
    if isinstance(policy, Mapping):
        url, fields = policy.get("url"), policy.get("fields")
    else:
        url, fields = getattr(policy, "url", None), getattr(policy, "fields", None)
    key = fields.get("key") if isinstance(fields, Mapping) else None
    if url is None:
        return f"{type(policy).__name__} without a destination URL"
    return f"destination {url!r}" + (f", key {key!r}" if key is not None else "")


__all__ = ["LocalFileRepository", "reserve_with_policy", "save_with_policy"]
