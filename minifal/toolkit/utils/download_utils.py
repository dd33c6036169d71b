"""``fal.toolkit.utils.download_utils``: fal's download helpers, at fal's import path.

The helpers themselves live in :mod:`minifal.toolkit.downloads` (atomic writes into the shared
data dir); this module adds fal's other names: ``TEMP_HEADERS`` and ``_hash_url``, the sha256 a
download is keyed by (fal's examples call it to find where weights went).
"""

from __future__ import annotations

from minifal.toolkit.downloads import (
    FAL_MODEL_WEIGHTS_DIR,
    FAL_PERSISTENT_DIR,
    FAL_REPOSITORY_DIR,
    DownloadError,
    clone_repository,
    download_file,
    download_model_weights,
    hash_url,
)

TEMP_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.8; rv:21.0) Gecko/20100101 Firefox/21.0"
    )
}
"""The browser-like User-Agent fal sends when fetching images."""

_hash_url = hash_url
"""fal's name for it (private there, yet called by fal's own examples)."""


__all__ = [
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "TEMP_HEADERS",
    "DownloadError",
    "clone_repository",
    "download_file",
    "download_model_weights",
]
