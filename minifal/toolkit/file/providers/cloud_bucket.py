"""What fal's cloud-bucket repositories (GCS, S3, R2) mean locally: a bucket dir in the data dir.

On fal they upload to a bucket with the app's own cloud credentials and hand out signed URLs.
A self-hosted server keeps outputs in its shared data dir, so here a bucket is a directory of
the data-dir store: ``save()`` writes ``DATA_DIR/files/<bucket>/<folder>/<uuid>_<name>`` (fal's
object key, below a directory named after the bucket) and returns the URL every runner serves
it at. Constructing one needs no credentials (those given are kept and unused), nothing is
uploaded to the cloud, and the first save of each service in a process logs a warning saying
so. The served URL does not expire: ``url_expiration`` is kept for code that reads it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from minifal.toolkit.downloads import write_atomically
from minifal.toolkit.file.providers import notice
from minifal.toolkit.file.storage import files_root, public_url
from minifal.toolkit.file.types import FileData, safe_file_name

DEFAULT_URL_TIMEOUT = 60 * 15
"""fal's signed-URL lifetime (15 minutes); informational here."""


def bucket_dir_name(bucket_name: str) -> str:
    """The bucket's directory name: the name reduced to a safe file name (``ValueError`` if
    nothing usable is left)."""
    name = safe_file_name(bucket_name)
    if name is None:
        raise ValueError(f"bucket_name {bucket_name!r} cannot name a directory of the data dir")
    return name


def bucket_directory(bucket_name: str, folder: str = "") -> Path:
    """``files_root()/<bucket>/<folder...>``, each part reduced to a safe file name.

    Empty, ``.`` and ``..`` parts of ``folder`` are dropped: an object key cannot leave its
    bucket's directory, nor be hidden from the runner that serves it.
    """
    parts = [part for part in map(safe_file_name, folder.split("/")) if part is not None]
    return files_root().joinpath(bucket_dir_name(bucket_name), *parts)


def store_in_bucket(repository: str, bucket_name: str, folder: str, data: FileData) -> str:
    """Store ``data`` as fal would name its object in the bucket; the URL it is served at.

    ``repository`` (e.g. ``"S3Repository (Amazon S3)"``) keys the once-per-process warning.
    """
    notice.notices.warn(
        repository,
        f"{repository}: nothing is uploaded to the cloud; bucket {bucket_name!r} is a directory "
        "under DATA_DIR/files, served by the runner (logged once per process)",
    )
    directory = bucket_directory(bucket_name, folder)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{uuid.uuid4().hex}_{data.file_name}"
    write_atomically(target, [data.data])
    return public_url(target)
