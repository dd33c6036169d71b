"""``fal.toolkit.file.providers.s3``: not applicable (see ``cloud_bucket``)."""

from __future__ import annotations

from dataclasses import dataclass

from minifal.toolkit.file.providers.cloud_bucket import DEFAULT_URL_TIMEOUT, refuse_cloud_bucket
from minifal.toolkit.file.types import FileRepository


@dataclass
class S3Repository(FileRepository):
    bucket_name: str = "fal_file_storage"
    url_expiration: int = DEFAULT_URL_TIMEOUT
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    def __post_init__(self) -> None:
        refuse_cloud_bucket("Amazon S3")


__all__ = ["DEFAULT_URL_TIMEOUT", "S3Repository"]
