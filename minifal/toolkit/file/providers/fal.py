"""``fal.toolkit.file.providers.fal``: fal's hosted repositories, mapped onto the data dir.

Every fal-hosted repository (``FalFileRepository``, ``...V2``, ``...V3``, ``FalCDNFileRepository``
and the internal variants) stores into ``DATA_DIR/files`` here, like the repository names
``"fal"``, ``"fal_v3"`` and ``"cdn"`` do, so apps that build one explicitly run unchanged.
Multipart uploads write their parts to the data dir and join them on ``complete()``.
``InMemoryRepository`` makes ``data:`` URLs, as on fal.

fal's token managers fetch short-lived CDN upload tokens from fal's REST API. There is no CDN to
authenticate to here, so a manager hands out a local token record instead, without any network
call: ``token_type`` ``"Local"``, ``base_upload_url`` the runner's ``/files/`` URL (where stored
files are served), and an expiry computed from ``valid_for``. Code that only checks or caches
tokens keeps working; nothing accepts the token as a credential.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from minifal.request_context import public_base_url
from minifal.toolkit.downloads import write_atomically
from minifal.toolkit.exceptions import FileUploadException
from minifal.toolkit.file.providers.local import LocalFileRepository
from minifal.toolkit.file.storage import new_stored_path, public_url, read_chunks
from minifal.toolkit.file.types import FileData, FileRepository

# fal's upload-client settings, kept for code that reads them; nothing here waits on a network.
DEFAULT_REQUEST_TIMEOUT = 10
PUT_REQUEST_TIMEOUT = 5 * 60
MAX_ATTEMPTS = 5
BASE_DELAY = 0.1
MAX_DELAY = 30
RETRY_CODES = [408, 409, 429, 500, 502, 503, 504]
MAX_ERROR_RESPONSE_BYTES = 4096

LOCAL_TOKEN_TYPE = "Local"
LOCAL_TOKEN = "minifal-local-no-cdn"
"""The token a local record carries: it authenticates nothing (there is no CDN)."""
TOKEN_LIFETIME = timedelta(hours=1)
"""How long a local token outlives the ``valid_for`` it was asked for (fal's CDN tokens last an
hour), so that it is still valid when ``valid_for`` has passed."""


@dataclass(repr=False)
class FalV2Token:
    token: str
    token_type: str
    base_upload_url: str
    expires_at: datetime

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(token='***', token_type={self.token_type!r}, "
            f"base_upload_url={self.base_upload_url!r}, expires_at={self.expires_at!r})"
        )

    def is_expired(self, offset: timedelta | int | None = None) -> bool:
        """Whether the token has expired, or will have by ``now + offset`` (seconds or delta)."""
        as_of = datetime.now(UTC)
        if offset is not None:
            as_of += offset if isinstance(offset, timedelta) else timedelta(seconds=offset)
        return as_of >= self.expires_at


class FalV3Token(FalV2Token):
    pass


class FalV2TokenManager:
    """fal's CDN token manager, handing out local tokens (see the module docstring)."""

    token_cls: type[FalV2Token] = FalV2Token
    storage_type: str = "fal-cdn"
    upload_prefix = "upload."

    def get_token(self, valid_for: timedelta | int | None = timedelta(hours=1)) -> FalV2Token:
        """A local token valid ``valid_for`` from now (seconds or a delta), as fal promises.

        Each call makes a fresh record (nothing is fetched, so nothing is worth caching); it
        expires ``valid_for + TOKEN_LIFETIME`` from now.
        """
        return self.token_cls(
            token=LOCAL_TOKEN,
            token_type=LOCAL_TOKEN_TYPE,
            base_upload_url=public_base_url() + "files/",
            expires_at=datetime.now(UTC) + _as_delta(valid_for) + TOKEN_LIFETIME,
        )


class FalV3TokenManager(FalV2TokenManager):
    token_cls = FalV3Token
    storage_type = "fal-cdn-v3"
    upload_prefix = ""


def _as_delta(valid_for: timedelta | int | None) -> timedelta:
    if valid_for is None:
        return timedelta(0)
    delta = valid_for if isinstance(valid_for, timedelta) else timedelta(seconds=valid_for)
    if delta < timedelta(0):
        raise ValueError(f"valid_for must not be negative, got {valid_for!r}")
    return delta


fal_v2_token_manager = FalV2TokenManager()
fal_v3_token_manager = FalV3TokenManager()

VariableType = TypeVar("VariableType")


class VariableReference(Generic[VariableType]):
    """A mutable box (fal keeps module-level settings in these)."""

    def __init__(self, value: VariableType) -> None:
        self.set(value)

    def get(self) -> VariableType:
        return self.value

    def set(self, value: VariableType) -> None:
        self.value = value


@dataclass
class FalFileRepositoryBase(LocalFileRepository):
    """fal's hosted storage: the data dir here."""


@dataclass
class FalFileRepository(FalFileRepositoryBase):
    pass


@dataclass
class FalFileRepositoryV3(LocalFileRepository):
    pass


@dataclass
class InternalFalFileRepositoryV3(LocalFileRepository):
    pass


FalFileRepositoryV2 = FalFileRepositoryV3
FalCDNFileRepository = FalFileRepositoryV3


@dataclass
class InMemoryRepository(FileRepository):
    """Put the bytes in a ``data:`` URL (nothing is stored)."""

    def save(
        self,
        file: FileData,
        multipart: bool | None = None,
        multipart_threshold: int | None = None,
        multipart_chunk_size: int | None = None,
        multipart_max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
    ) -> str:
        encoded = base64.b64encode(file.data).decode("ascii")
        return f"data:{file.content_type};base64,{encoded}"


class MultipartUploadV3:
    """A file sent in numbered parts: ``create()``, ``upload_part(n, data)``..., ``complete()``.

    The URL is known after ``create()``; the parts wait in a private temp dir beside the data
    dir's files and are joined, in part order, into the stored file by ``complete()``. ``upload``
    does all of it for bytes or a path.
    """

    MULTIPART_THRESHOLD = 100 * 1024 * 1024
    MULTIPART_CHUNK_SIZE = 10 * 1024 * 1024
    MULTIPART_MAX_CONCURRENCY = 10

    def __init__(
        self,
        file_name: str,
        chunk_size: int | None = None,
        content_type: str | None = None,
        max_concurrency: int | None = None,
        request: Any = None,
    ) -> None:
        self.file_name = FileData(b"", content_type, file_name).file_name
        self.chunk_size = chunk_size or self.MULTIPART_CHUNK_SIZE
        self.content_type = content_type or "application/octet-stream"
        self.max_concurrency = max_concurrency or self.MULTIPART_MAX_CONCURRENCY
        self._target: Path | None = None
        self._parts_dir: Path | None = None
        self._parts: dict[int, Path] = {}

    @property
    def access_url(self) -> str:
        if self._target is None:
            raise FileUploadException("Upload not initiated: call create() first")
        return public_url(self._target)

    def create(self, object_lifecycle_preference: dict[str, str] | None = None) -> None:
        self._target = new_stored_path(self.file_name)
        self._parts_dir = Path(tempfile.mkdtemp(prefix=".parts.", dir=self._target.parent))

    def upload_part(self, part_number: int, data: bytes) -> None:
        if self._parts_dir is None:
            raise FileUploadException("Upload not initiated: call create() first")
        if part_number < 1:
            raise FileUploadException(f"Part numbers start at 1, got {part_number}")
        part = self._parts_dir / f"{part_number:08d}"
        part.write_bytes(data)
        self._parts[part_number] = part

    def complete(self) -> str:
        if self._target is None or self._parts_dir is None:
            raise FileUploadException("Upload not initiated: call create() first")
        ordered = [self._parts[number] for number in sorted(self._parts)]
        try:
            write_atomically(self._target, (chunk for p in ordered for chunk in read_chunks(p)))
        finally:
            shutil.rmtree(self._parts_dir, ignore_errors=True)
        return self.access_url

    def upload(self, content: bytes | Path) -> str:
        self.create()
        if isinstance(content, bytes):
            chunks = [
                content[i : i + self.chunk_size] for i in range(0, len(content), self.chunk_size)
            ]
        else:
            chunks = read_chunks(Path(content), self.chunk_size)
        for number, chunk in enumerate(chunks, start=1):
            self.upload_part(number, chunk)
        return self.complete()

    @classmethod
    def save(
        cls,
        file: FileData,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
    ) -> str:
        return cls(file.file_name, chunk_size, file.content_type, max_concurrency).upload(file.data)

    @classmethod
    def save_file(
        cls,
        file_path: str | Path,
        chunk_size: int | None = None,
        content_type: str | None = None,
        max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
    ) -> tuple[str, FileData | None]:
        path = Path(file_path)
        upload = cls(path.name, chunk_size, content_type, max_concurrency)
        return upload.upload(path), None


MultipartUploadGCS = MultipartUploadV3
InternalMultipartUploadV3 = MultipartUploadV3
MultipartUpload = MultipartUploadV3
