"""``fal.toolkit.image``: ``Image`` and image sizes, plus fal's helpers for input images.

``read_image_from_url`` fetches through minifal's bounded fetcher (http(s) and ``data:`` URLs,
at most ``MAX_IMAGE_DOWNLOAD_SIZE`` bytes) and answers 422 for a URL it cannot read as an image.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import TYPE_CHECKING

from fastapi import HTTPException

from minifal.toolkit.image.image import (
    IMAGE_SIZE_PRESETS,
    MAX_IMAGE_DOWNLOAD_SIZE,
    Image,
    ImageField,
    ImageFormat,
    ImageSize,
    ImageSizeField,
    ImageSizeInput,
    ImageSizePreset,
    get_image_size,
)
from minifal.toolkit.url_fetch import fetch_bytes

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


def filter_by(has_nsfw_concepts: list[bool], images: list[PILImage]) -> list[PILImage]:
    """Replace each flagged image by a black image of the same size."""
    from PIL import Image as PILImageModule

    return [
        PILImageModule.new("RGB", (image.width, image.height), (0, 0, 0)) if flagged else image
        for image, flagged in zip(images, has_nsfw_concepts, strict=False)
    ]


def preprocess_image(
    image_pil: PILImage, convert_to_rgb: bool = True, fix_orientation: bool = True
) -> PILImage:
    """The first frame of an image (MPO/GIF), in RGB and upright by its EXIF orientation."""
    from PIL import ImageOps, ImageSequence

    first = next(iter(ImageSequence.Iterator(image_pil)))
    if convert_to_rgb:
        first = first.convert("RGB")
    if fix_orientation:
        first = ImageOps.exif_transpose(first)
    return first


@lru_cache(maxsize=64)
def read_image_from_url(
    url: str,
    convert_to_rgb: bool = True,
    fix_orientation: bool = True,
    max_size: int = MAX_IMAGE_DOWNLOAD_SIZE,
) -> PILImage:
    """Fetch and decode an image; a URL that is not a readable image is a 422."""
    from PIL import Image as PILImageModule

    try:
        content = fetch_bytes(url, max_bytes=max_size)
        image_pil = PILImageModule.open(io.BytesIO(content))
        return preprocess_image(image_pil, convert_to_rgb, fix_orientation)
    except Exception as exc:
        raise HTTPException(422, f"Could not load image from url: {url[:200]}") from exc


__all__ = [
    "IMAGE_SIZE_PRESETS",
    "MAX_IMAGE_DOWNLOAD_SIZE",
    "Image",
    "ImageField",
    "ImageFormat",
    "ImageSize",
    "ImageSizeField",
    "ImageSizeInput",
    "ImageSizePreset",
    "filter_by",
    "get_image_size",
    "preprocess_image",
    "read_image_from_url",
]
