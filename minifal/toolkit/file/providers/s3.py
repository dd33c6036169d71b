"""``fal.toolkit.file.providers.s3``: Amazon S3 buckets as directories of the data dir.

See :mod:`minifal.toolkit.file.providers.cloud_bucket`: no credentials are needed (those passed
are kept, unused; fal's ``AWS_*`` variables are not read), and ``save()`` stores under
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
class S3Repository(FileRepository):
    bucket_name: str = "fal_file_storage"
    url_expiration: int = DEFAULT_URL_TIMEOUT
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

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
        key: str | None = None,
    ) -> str:
        return store_in_bucket("S3Repository (Amazon S3)", self.bucket_name, key or "", data)


__all__ = ["DEFAULT_URL_TIMEOUT", "S3Repository"]
