"""``fal.toolkit.file.providers.gcp``: not applicable (see ``cloud_bucket``)."""

from __future__ import annotations

from dataclasses import dataclass

from minifal.toolkit.file.providers.cloud_bucket import DEFAULT_URL_TIMEOUT, refuse_cloud_bucket
from minifal.toolkit.file.types import FileRepository


@dataclass
class GoogleStorageRepository(FileRepository):
    bucket_name: str = "fal_file_storage"
    url_expiration: int | None = DEFAULT_URL_TIMEOUT
    gcp_account_json: str | None = None
    folder: str = ""

    def __post_init__(self) -> None:
        refuse_cloud_bucket("Google Cloud Storage")


__all__ = ["DEFAULT_URL_TIMEOUT", "GoogleStorageRepository"]
