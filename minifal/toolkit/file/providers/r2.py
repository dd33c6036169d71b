"""``fal.toolkit.file.providers.r2``: Cloudflare R2 buckets as directories of the data dir.

See :mod:`minifal.toolkit.file.providers.cloud_bucket`: no credentials are needed (those passed
are kept, unused; fal's ``R2_CREDS_JSON`` is not read), and ``save()`` stores under
``DATA_DIR/files/<bucket_name>/<key>/`` and returns the runner's URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from minifal.toolkit.file.providers.cloud_bucket import (
    DEFAULT_URL_TIMEOUT,
    bucket_dir_name,
    store_in_bucket,
)
from minifal.toolkit.file.types import FileData, FileRepository


@dataclass
class R2Repository(FileRepository):
    bucket_name: str = "fal_file_storage"
    url_expiration: int = DEFAULT_URL_TIMEOUT
    r2_account_json: str | None = None
    key: str = ""

    def __post_init__(self) -> None:
        bucket_dir_name(self.bucket_name)

    def save(
        self,
        data: FileData,
        multipart: bool | None = None,
        multipart_threshold: int | None = None,
        multipart_chunk_size: int | None = None,
        multipart_max_concurrency: int | None = None,
        object_lifecycle_preference: dict[str, str] | None = None,
    ) -> str:
        return store_in_bucket("R2Repository (Cloudflare R2)", self.bucket_name, self.key, data)


__all__ = ["DEFAULT_URL_TIMEOUT", "R2Repository"]
