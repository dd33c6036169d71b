"""``fal.toolkit.file.providers.r2``: not applicable (see ``cloud_bucket``)."""

from __future__ import annotations

from dataclasses import dataclass

from minifal.toolkit.file.providers.cloud_bucket import DEFAULT_URL_TIMEOUT, refuse_cloud_bucket
from minifal.toolkit.file.types import FileRepository


@dataclass
class R2Repository(FileRepository):
    bucket_name: str = "fal_file_storage"
    url_expiration: int = DEFAULT_URL_TIMEOUT
    r2_account_json: str | None = None
    key: str = ""

    def __post_init__(self) -> None:
        refuse_cloud_bucket("Cloudflare R2")


__all__ = ["DEFAULT_URL_TIMEOUT", "R2Repository"]
