"""``fal.toolkit.file.providers.gcp``: Google Cloud Storage buckets as directories of the data dir.

See :mod:`minifal.toolkit.file.providers.cloud_bucket`: no credentials are needed (those passed
are kept, unused; fal's ``GCLOUD_SA_JSON`` is not read), and ``save()`` stores under
``DATA_DIR/files/<bucket_name>/<folder>/`` and returns the runner's URL.
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
class GoogleStorageRepository(FileRepository):
    bucket_name: str = "fal_file_storage"
    url_expiration: int | None = DEFAULT_URL_TIMEOUT
    gcp_account_json: str | None = None
    folder: str = ""

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
        return store_in_bucket(
            "GoogleStorageRepository (Google Cloud Storage)", self.bucket_name, self.folder, data
        )


__all__ = ["DEFAULT_URL_TIMEOUT", "GoogleStorageRepository"]
