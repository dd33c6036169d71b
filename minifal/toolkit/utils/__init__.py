"""``fal.toolkit.utils``: download helpers and ONNX Runtime thread settings."""

from minifal.toolkit.utils.download_utils import (
    FAL_MODEL_WEIGHTS_DIR,
    FAL_PERSISTENT_DIR,
    FAL_REPOSITORY_DIR,
    TEMP_HEADERS,
    DownloadError,
    clone_repository,
    download_file,
    download_model_weights,
)
from minifal.toolkit.utils.setup_utils import patch_onnx_runtime

__all__ = [
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "TEMP_HEADERS",
    "DownloadError",
    "clone_repository",
    "download_file",
    "download_model_weights",
    "patch_onnx_runtime",
]
