"""``fal.toolkit``: files and images, downloads, and the compiled-kernel cache."""

from pydantic import Field

from minifal.toolkit.compile_cache import (
    load_inductor_cache,
    sync_inductor_cache,
    synchronized_inductor_cache,
)
from minifal.toolkit.downloads import (
    FAL_MODEL_WEIGHTS_DIR,
    FAL_PERSISTENT_DIR,
    FAL_REPOSITORY_DIR,
    DownloadError,
    clone_repository,
    download_file,
    download_model_weights,
)
from minifal.toolkit.file import File
from minifal.toolkit.gpu import get_gpu_type
from minifal.toolkit.image import Image, ImageSize, ImageSizeInput, get_image_size

__all__ = [
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "DownloadError",
    "Field",
    "File",
    "Image",
    "ImageSize",
    "ImageSizeInput",
    "clone_repository",
    "download_file",
    "download_model_weights",
    "get_gpu_type",
    "get_image_size",
    "load_inductor_cache",
    "sync_inductor_cache",
    "synchronized_inductor_cache",
]
