"""``fal.toolkit.File``: a file passed by URL, and the repositories files are stored in.

On fal, ``File.from_bytes`` uploads to fal's CDN and the JSON answer carries the CDN URL. minifal
has no CDN: the default repository (``"local"``, and fal's hosted names ``"fal"``, ``"fal_v2"``,
``"fal_v3"``, ``"cdn"``) writes the bytes under ``DATA_DIR/files`` and hands out a URL the runner
serves (:mod:`minifal.toolkit.file.storage`). ``"in_memory"`` puts the bytes in a ``data:`` URL,
as on fal. A :class:`FileRepository` instance works too, with fal's fallback list: when the
repository raises, each fallback is tried in turn.

As an input, a ``File`` field accepts a bare URL string or ``{"url": ...}``; only http(s) and
``data:`` URLs pass validation (anything else is a 422 naming the field). The bytes are fetched
lazily, on :meth:`File.as_bytes` (fal raises there instead), within the limits of
``minifal.toolkit.url_fetch``.

The JSON is fal's. ``file_data`` is a field as on fal (an input may carry it, an output never
does) but is left out of the JSON schema: with it, the input and output schemas of a file differ
and FastAPI splits every model holding one into ``X-Input`` / ``X-Output`` components (fal's
OpenAPI does); without it, ``File``, ``Image``... stay one component each.

A little over 400 lines, long because fal's ``fal.toolkit.file.file`` holds every one of these
names (``File``, ``PendingFile``, ``CompressedFile``, ``FileField``...) at one path; storing and
fetching live in ``storage.py`` and ``url_fetch.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request

from minifal.toolkit.downloads import write_atomically
from minifal.toolkit.exceptions import FileUploadFallbackException
from minifal.toolkit.file.providers.fal import (
    FalFileRepository,
    FalFileRepositoryV3,
    InMemoryRepository,
)
from minifal.toolkit.file.providers.gcp import GoogleStorageRepository
from minifal.toolkit.file.providers.local import LocalFileRepository
from minifal.toolkit.file.providers.r2 import R2Repository
from minifal.toolkit.file.storage import files_root, resolve_stored_file
from minifal.toolkit.file.types import FileData, FileRepository, RepositoryId, Reservation
from minifal.toolkit.url_fetch import check_fetchable_url, fetch_bytes, max_download_bytes

IS_PYDANTIC_V2 = True
"""fal supports pydantic 1 and 2; minifal needs pydantic 2."""

FileRepositoryFactory = Callable[[], FileRepository]

BUILT_IN_REPOSITORIES: dict[str, FileRepositoryFactory] = {
    "local": LocalFileRepository,
    "fal": FalFileRepository,
    "fal_v3": FalFileRepositoryV3,
    "in_memory": InMemoryRepository,
    "gcp_storage": GoogleStorageRepository,
    "r2": R2Repository,
}
DEPRECATED_REPOSITORY_IDS = {"fal_v2": "fal_v3", "cdn": "fal_v3"}
"""fal folds these onto ``fal_v3`` (with a deprecation warning there; silently here)."""

DEFAULT_REPOSITORY: FileRepository | RepositoryId = "local"
IN_MEMORY_REPOSITORY = "in_memory"
FALLBACK_REPOSITORY: list[FileRepository | RepositoryId] = []
"""fal falls back to its older CDN; the data dir has no second copy to fall back to."""
OBJECT_LIFECYCLE_PREFERENCE_KEY = "x-fal-object-lifecycle-preference"

FallbackRepositories = FileRepository | RepositoryId | list[FileRepository | RepositoryId] | None


def get_builtin_repository(id: RepositoryId | FileRepository) -> FileRepository:
    """The repository an id names (an instance is returned as it is)."""
    if isinstance(id, FileRepository):
        return id
    name = DEPRECATED_REPOSITORY_IDS.get(id, id)
    if name not in BUILT_IN_REPOSITORIES:
        known = ", ".join(sorted([*BUILT_IN_REPOSITORIES, *DEPRECATED_REPOSITORY_IDS]))
        raise ValueError(f"Unknown file repository {id!r}; minifal knows: {known}")
    return BUILT_IN_REPOSITORIES[name]()


def request_lifecycle_preference(request: Request) -> dict[str, str] | None:
    """fal's per-request object lifetime header, parsed (``None`` when absent or not JSON).

    Accepted and ignored by the data-dir store: stored files live until the data dir is cleaned.
    """
    raw = request.headers.get(OBJECT_LIFECYCLE_PREFERENCE_KEY)
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def FileField(*args: Any, **kwargs: Any) -> Any:
    """``pydantic.Field`` that marks the field as a file in the schema (``ui.field = "file"``)."""
    return ui_field("file", *args, **kwargs)


def ui_field(kind: str, *args: Any, **kwargs: Any) -> Any:
    """``pydantic.Field`` with ``ui.field`` defaulting to ``kind`` in its JSON schema."""
    extra = kwargs.pop("json_schema_extra", None) or {}
    if callable(extra):
        original = extra

        def merged(schema: dict[str, Any]) -> None:
            original(schema)
            schema.setdefault("ui", {}).setdefault("field", kind)

        kwargs["json_schema_extra"] = merged
    else:
        extra.setdefault("ui", {}).setdefault("field", kind)
        kwargs["json_schema_extra"] = extra
    return Field(*args, **kwargs)


def _store_with_fallback(
    operation: Callable[[FileRepository, dict[str, Any]], Any],
    repository: FileRepository | RepositoryId,
    fallback_repository: FallbackRepositories,
    save_kwargs: dict[str, Any],
    fallback_save_kwargs: dict[str, Any],
) -> Any:
    """Run ``operation`` on the repository, then on each fallback until one succeeds."""
    if fallback_repository is None:
        fallbacks: list[FileRepository | RepositoryId] = []
    elif isinstance(fallback_repository, list):
        fallbacks = fallback_repository
    else:
        fallbacks = [fallback_repository]
    attempts = [(repository, save_kwargs), *((fb, fallback_save_kwargs) for fb in fallbacks)]
    failures: list[str] = []
    for repo, kwargs in attempts:
        try:
            return operation(get_builtin_repository(repo), kwargs)
        except Exception as exc:
            if len(attempts) == 1:
                raise
            label = repo if isinstance(repo, str) else type(repo).__name__
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            last = exc
    raise FileUploadFallbackException(
        f"Failed to store the file in all {len(failures)} repositories. " + "; ".join(failures)
    ) from last


class File(BaseModel):
    # No docstring: pydantic would make it the schema's description, and fal's File has none.
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
    file_data: SkipJsonSchema[bytes | None] = Field(
        None, description="File data", exclude=True, repr=False
    )

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

    @classmethod
    def _from_url(cls, url: str) -> Self:
        """A file known only by its URL (fal's examples build inputs this way)."""
        return cls(url=url)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        repository: FileRepository | RepositoryId = DEFAULT_REPOSITORY,
        fallback_repository: FallbackRepositories = FALLBACK_REPOSITORY,
        request: Request | None = None,
        save_kwargs: dict | None = None,
        fallback_save_kwargs: dict | None = None,
    ) -> Self:
        """Store ``data`` in ``repository`` and describe it; the bytes stay on the result."""
        fdata = FileData(data, content_type, file_name)
        stored: list[Path] = []

        def save(repo: FileRepository, kwargs: dict[str, Any]) -> str:
            if isinstance(repo, LocalFileRepository):
                url, path = repo.store_bytes(fdata)
                stored.append(path)
                return url
            return repo.save(fdata, **kwargs)

        url = _store_with_fallback(
            save, repository, fallback_repository, save_kwargs or {}, fallback_save_kwargs or {}
        )
        file = cls(
            url=url,
            content_type=fdata.content_type,
            file_name=fdata.file_name,
            file_size=len(data),
            file_data=data,
        )
        file._stored_path = stored[-1] if stored else None
        return file

    @classmethod
    async def from_bytes_async(cls, data: bytes, *args: Any, **kwargs: Any) -> Self:
        return await asyncio.to_thread(cls.from_bytes, data, *args, **kwargs)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        repository: FileRepository | RepositoryId = DEFAULT_REPOSITORY,
        multipart: bool | None = None,
        fallback_repository: FallbackRepositories = FALLBACK_REPOSITORY,
        request: Request | None = None,
        save_kwargs: dict | None = None,
        fallback_save_kwargs: dict | None = None,
    ) -> Self:
        """Store a copy of the file at ``path``; the data dir copy streams, never read whole."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"File {source} does not exist")
        named = FileData(b"", content_type, source.name)
        stored: list[Path] = []

        def save(repo: FileRepository, kwargs: dict[str, Any]) -> tuple[str, FileData | None]:
            if isinstance(repo, LocalFileRepository):
                url, path = repo.store_path(source, named.file_name)
                stored.append(path)
                return url, None
            return repo.save_file(source, named.content_type, **kwargs)

        url, data = _store_with_fallback(
            save, repository, fallback_repository, save_kwargs or {}, fallback_save_kwargs or {}
        )
        file = cls(
            url=url,
            content_type=named.content_type,
            file_name=named.file_name,
            file_size=source.stat().st_size,
            file_data=data.data if data is not None else None,
        )
        file._stored_path = stored[-1] if stored else None
        return file

    @classmethod
    async def from_path_async(cls, path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Self:
        return await asyncio.to_thread(cls.from_path, path, *args, **kwargs)

    @classmethod
    def reserve(
        cls,
        content_type: str | None = None,
        file_name: str | None = None,
        request: Request | None = None,
        repository: FileRepository | RepositoryId = DEFAULT_REPOSITORY,
        extra_headers: dict[str, str] | None = None,
    ) -> PendingFile:
        """Get the file's URL now; send the bytes later with ``pending.complete(data)``.

        ``pending.abort()`` gives the URL up. Until ``complete`` the URL answers 404.
        """
        fdata = FileData(b"", content_type, file_name)
        reservation = get_builtin_repository(repository).reserve(
            fdata.file_name, fdata.content_type, None, request, extra_headers=extra_headers
        )
        return PendingFile(fdata.content_type, fdata.file_name, reservation)

    def as_bytes(self) -> bytes:
        """The file's bytes, fetched from ``url`` on first use (size-capped) and then kept."""
        if self.file_data is None:
            if self._stored_path is not None:
                self.file_data = self._stored_path.read_bytes()
            else:
                self.file_data = fetch_bytes(self.url)
        return self.file_data

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the file to ``path`` (through a temp file and a rename) and return its path."""
        target = Path(path).resolve()
        if target.exists() and not overwrite:
            raise FileExistsError(f"File {target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, [self.as_bytes()])
        return target

    async def save_async(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        return await asyncio.to_thread(self.save, path, overwrite)


@dataclass
class PendingFile:
    """A reserved file (see :meth:`File.reserve`)."""

    content_type: str
    file_name: str
    _reservation: Reservation = field(repr=False)

    @property
    def url(self) -> str:
        return self._reservation.url

    def complete(self, content: bytes | str | Path) -> File:
        if not isinstance(content, bytes):
            content = Path(content)
        self._reservation.complete(content)
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        return File(
            url=self.url,
            content_type=self.content_type,
            file_name=self.file_name,
            file_size=size,
            file_data=content if isinstance(content, bytes) else None,
        )

    def abort(self) -> None:
        self._reservation.abort()


class CompressedFile(File):
    # A zip archive; iterating it (or ``glob``) extracts it once into a private temp dir,
    # removed with the object. The total extracted size is capped like a download.
    extract_dir: str | None = Field(default=None, exclude=True, repr=False)

    def __iter__(self) -> Iterator[Path]:  # type: ignore[override]
        return iter(sorted(self._extracted().iterdir()))

    def glob(self, pattern: str) -> Iterator[Path]:
        return self._extracted().glob(pattern)

    def _extracted(self) -> Path:
        if not self.extract_dir:
            self.extract_dir = _extract_zip(self.as_bytes())
        return Path(self.extract_dir)

    def __del__(self) -> None:
        extract_dir = self.__dict__.get("extract_dir")
        if extract_dir:
            shutil.rmtree(extract_dir, ignore_errors=True)


def _extract_zip(data: bytes) -> str:
    """Extract a zip archive into a new temp dir (zipfile keeps members inside it)."""
    limit = max_download_bytes()
    target = tempfile.mkdtemp(prefix="minifal-zip-")
    try:
        with tempfile.TemporaryFile() as archive:
            archive.write(data)
            archive.seek(0)
            with zipfile.ZipFile(archive) as zipped:
                total = sum(member.file_size for member in zipped.infolist())
                if total > limit:
                    raise ValueError(
                        f"Archive expands to {total} bytes, more than the {limit} allowed"
                    )
                zipped.extractall(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


__all__ = [
    "BUILT_IN_REPOSITORIES",
    "DEFAULT_REPOSITORY",
    "FALLBACK_REPOSITORY",
    "IN_MEMORY_REPOSITORY",
    "IS_PYDANTIC_V2",
    "OBJECT_LIFECYCLE_PREFERENCE_KEY",
    "CompressedFile",
    "File",
    "FileField",
    "FileRepositoryFactory",
    "PendingFile",
    "files_root",
    "get_builtin_repository",
    "request_lifecycle_preference",
    "resolve_stored_file",
]
