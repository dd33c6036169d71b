"""``fal.toolkit``: files, images, audio and video; downloads; the key-value store; input
constraints and schema helpers; the compiled-kernel cache.

Every name of fal's ``fal.toolkit.__all__`` is here, and fal's submodules exist at the same
paths (``minifal.toolkit.image.safety_checker``, ``...file.providers.fal``,
``...utils.download_utils``...). What each means locally: docs/fal-compatibility.md.

fal's module paths: imported by the App's code, by the runner (a fetch error's status, stored
files) and by the fleet (the SSRF check of webhooks). It imports ``compiled`` (fal's
compilation names are re-exported from there), ``host``, ``exceptions`` and the request
context; never the runner, the fleet or the CLI.
"""

from minifal.compiled.cache import (
    load_inductor_cache,
    sync_inductor_cache,
    synchronized_inductor_cache,
)
from minifal.host.gpu import get_gpu_type
from minifal.toolkit.audio import Audio, AudioField
from minifal.toolkit.constraints import (
    ImageSizeConstraints,
    ImageValidationConfig,
    ImageValidationOptions,
    VideoNormalizationConfig,
    VideoValidationConfig,
    VideoValidationOptions,
    to_xfal,
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
from minifal.toolkit.exceptions import FalTookitException, FileUploadException, KVStoreException
from minifal.toolkit.file import CompressedFile, File, FileField
from minifal.toolkit.image import (
    Image,
    ImageField,
    ImageSize,
    ImageSizeField,
    ImageSizeInput,
    get_image_size,
)
from minifal.toolkit.kv import KVStore
from minifal.toolkit.pydantic import FalBaseModel, Field, Hidden
from minifal.toolkit.video import Video, VideoField

__all__ = [
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "Audio",
    "AudioField",
    "CompressedFile",
    "DownloadError",
    "FalBaseModel",
    "FalTookitException",
    "Field",
    "File",
    "FileField",
    "FileUploadException",
    "Hidden",
    "Image",
    "ImageField",
    "ImageSize",
    "ImageSizeConstraints",
    "ImageSizeField",
    "ImageSizeInput",
    "ImageValidationConfig",
    "ImageValidationOptions",
    "KVStore",
    "KVStoreException",
    "Video",
    "VideoField",
    "VideoNormalizationConfig",
    "VideoValidationConfig",
    "VideoValidationOptions",
    "clone_repository",
    "download_file",
    "download_model_weights",
    "get_gpu_type",
    "get_image_size",
    "load_inductor_cache",
    "sync_inductor_cache",
    "synchronized_inductor_cache",
    "to_xfal",
]
