"""What fal's cloud-bucket repositories (GCS, S3, R2) mean locally: not applicable.

They upload to a bucket with the app's own cloud credentials and hand out signed URLs. minifal
keeps outputs in the shared data dir and reaches no cloud service, so building one raises
:class:`FileUploadException` naming the local alternative; the classes exist so that an app that
imports them still loads.
"""

from __future__ import annotations

from minifal.toolkit.exceptions import FileUploadException

DEFAULT_URL_TIMEOUT = 60 * 15
"""fal's signed-URL lifetime (15 minutes)."""


def refuse_cloud_bucket(service: str) -> None:
    raise FileUploadException(
        f"{service} uploads are not available in minifal: outputs are stored under "
        "DATA_DIR/files and served by the runner (use the default repository)"
    )
