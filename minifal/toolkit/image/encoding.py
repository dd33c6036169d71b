"""How ``Image.from_pil`` turns pixels into bytes: fal's formats and defaults, encoded cheaply.

PNG (fal's default) stays lossless and stays PNG. An 8-bit RGB or RGBA image is written by fpng
(a PNG writer that trades a few percent of size for ~25x speed: a 512x512 image in ~1 ms on one
CPU core instead of Pillow's 20-25 ms at ``compress_level=1``; BENCHMARKS.md, section 9); any
other mode, an image that carries an ICC profile, or a machine without fpng gets Pillow's PNG at
``compress_level=1``, fal's choice. JPEG is Pillow's (libjpeg-turbo) at quality 95, already fast.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image as PILImage

try:
    import fpng
except ImportError:  # an optional speed-up: Pillow writes the same pixels
    fpng = None

PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 95
FPNG_MODES = ("RGB", "RGBA")


def fast_png_applies(image: PILImage.Image) -> bool:
    """fpng writes only 8-bit RGB/RGBA pixels; metadata Pillow would keep (an ICC profile)
    makes it Pillow's job."""
    return fpng is not None and image.mode in FPNG_MODES and "icc_profile" not in image.info


def encode(image: PILImage.Image, format: str) -> bytes:
    """``image`` as ``format`` (``png``, ``jpeg``, ``webp``, ``gif``) bytes."""
    if format == "png" and fast_png_applies(image):
        return fpng.from_pil(image)
    options: dict[str, Any] = {}
    if format == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    elif format == "jpeg":
        options["quality"] = JPEG_QUALITY
        if image.mode not in ("RGB", "L", "CMYK"):
            image = image.convert("RGB")  # JPEG holds neither alpha nor a palette
    with io.BytesIO() as buffer:
        image.save(buffer, format=format, **options)
        return buffer.getvalue()
