"""``fal.toolkit.image.image``: ``Image`` (a :class:`File` with pixel dimensions), fal's
image-size inputs, and the ``ImageField`` / ``ImageSizeField`` schema helpers.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, Literal, Self

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from pydantic import AfterValidator, BaseModel, Field
from starlette.requests import Request

from minifal.toolkit.constraints import ImageSizeConstraints, to_xfal
from minifal.toolkit.file.file import (
    DEFAULT_REPOSITORY,
    FALLBACK_REPOSITORY,
    FallbackRepositories,
    File,
    ui_field,
)
from minifal.toolkit.file.types import FileRepository, RepositoryId
from minifal.toolkit.image.encoding import encode

ImageFormat = Literal["png", "jpeg", "jpg", "webp", "gif"]

ImageSizePreset = Literal[
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
]

MAX_IMAGE_SIDE = 14142
"""fal's bound: about 200 megapixels for a square image."""

MAX_IMAGE_DOWNLOAD_SIZE = 50 * 1024 * 1024
"""fal's cap on an input image fetched by URL (``read_image_from_url``)."""


class ImageSize(BaseModel):
    width: int = Field(
        default=512, description="The width of the generated image.", gt=0, le=MAX_IMAGE_SIDE
    )
    height: int = Field(
        default=512, description="The height of the generated image.", gt=0, le=MAX_IMAGE_SIDE
    )


IMAGE_SIZE_PRESETS: dict[str, ImageSize] = {
    "square_hd": ImageSize(width=1024, height=1024),
    "square": ImageSize(width=512, height=512),
    "portrait_4_3": ImageSize(width=768, height=1024),
    "portrait_16_9": ImageSize(width=576, height=1024),
    "landscape_4_3": ImageSize(width=1024, height=768),
    "landscape_16_9": ImageSize(width=1024, height=576),
}

ImageSizeInput = ImageSize | ImageSizePreset


def get_image_size(source: ImageSizeInput) -> ImageSize:
    """The width and height an ``ImageSizeInput`` stands for (a fresh copy for presets)."""
    if isinstance(source, ImageSize):
        return source
    if isinstance(source, str) and source in IMAGE_SIZE_PRESETS:
        return IMAGE_SIZE_PRESETS[source].model_copy()
    raise TypeError(f"Invalid value for ImageSize: {source!r}")


def ImageSizeField(
    *args: Any,
    constraints: ImageSizeConstraints | None = None,
    ui: dict | None = None,
    **kwargs: Any,
) -> Any:
    """``pydantic.Field`` for an ``image_size`` input, publishing its limits under ``x-fal``.

    With ``constraints``, minifal also enforces them: a preset or size outside the limits is
    a 422 naming the field (fal only publishes them).
    """
    fal_extra: dict[str, Any] = {}
    if constraints is not None and (published := to_xfal(constraints)):
        fal_extra["x-fal"] = published
    if ui:
        fal_extra["ui"] = ui
    extra = kwargs.pop("json_schema_extra", None) or {}
    if callable(extra):
        original = extra

        def merged(schema: dict[str, Any]) -> None:
            original(schema)
            schema.update(fal_extra)

        kwargs["json_schema_extra"] = merged
    else:
        extra.update(fal_extra)
        kwargs["json_schema_extra"] = extra
    field_info = Field(*args, **kwargs)
    if constraints is not None:
        field_info.metadata.append(AfterValidator(_size_checker(constraints)))
    return field_info


def _size_checker(constraints: ImageSizeConstraints):
    def check(value: Any) -> Any:
        if isinstance(value, ImageSize | str):
            size = get_image_size(value)
            constraints.check_size(size.width, size.height)
        return value

    return check


def ImageField(*args: Any, **kwargs: Any) -> Any:
    """``pydantic.Field`` that marks the field as an image in the schema (``ui.field``)."""
    return ui_field("image", *args, **kwargs)


class Image(File):
    """
    Represents an image file.
    """

    width: int | None = Field(
        None, description="The width of the image in pixels.", examples=[1024]
    )
    height: int | None = Field(
        None, description="The height of the image in pixels.", examples=[1024]
    )

    model_config = {"json_schema_extra": {"ui": {"field": "image"}}}

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls,
        data: bytes,
        format: ImageFormat | str,
        size: ImageSize | None = None,
        file_name: str | None = None,
        repository: FileRepository | RepositoryId = DEFAULT_REPOSITORY,
        fallback_repository: FallbackRepositories = FALLBACK_REPOSITORY,
        request: Request | None = None,
        save_kwargs: dict | None = None,
        fallback_save_kwargs: dict | None = None,
    ) -> Self:
        """Store encoded image bytes; without ``size`` the dimensions are read from the header.

        Bytes PIL cannot identify are stored all the same, with unknown dimensions.
        """
        image = super().from_bytes(
            data,
            content_type=f"image/{_normalized_format(format)}",
            file_name=file_name,
            repository=repository,
            fallback_repository=fallback_repository,
            request=request,
            save_kwargs=save_kwargs,
            fallback_save_kwargs=fallback_save_kwargs,
        )
        if size is None:
            image.width, image.height = _dimensions(io.BytesIO(data))
        else:
            image.width, image.height = size.width, size.height
        return image

    @classmethod
    def from_pil(
        cls,
        pil_image: PILImage.Image,
        format: ImageFormat | str | None = None,
        file_name: str | None = None,
        repository: FileRepository | RepositoryId = DEFAULT_REPOSITORY,
        fallback_repository: FallbackRepositories = FALLBACK_REPOSITORY,
        request: Request | None = None,
        save_kwargs: dict | None = None,
        fallback_save_kwargs: dict | None = None,
    ) -> Self:
        """Encode a PIL image (PNG by default, lossless) and store it.

        PNG as fal writes it (its ``compress_level=1``: fast rather than small), through fpng
        where it applies (``encoding.py``: the same pixels, ~25x faster), JPEG with
        ``quality=95``. An image with alpha or a palette is converted to RGB for JPEG, which
        cannot hold either.
        """
        chosen = _normalized_format(format or pil_image.format or "png")
        encoded = encode(pil_image, chosen)
        size = ImageSize(width=pil_image.width, height=pil_image.height)
        return cls.from_bytes(
            encoded,
            chosen,
            size,
            file_name,
            repository,
            fallback_repository=fallback_repository,
            request=request,
            save_kwargs=save_kwargs,
            fallback_save_kwargs=fallback_save_kwargs,
        )

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        repository: FileRepository | RepositoryId = DEFAULT_REPOSITORY,
        *args: Any,
        **kwargs: Any,
    ) -> Self:
        image = super().from_path(path, content_type, repository, *args, **kwargs)
        with open(path, "rb") as source:
            image.width, image.height = _dimensions(source)
        return image

    def to_pil(self, mode: str = "RGB") -> PILImage.Image:
        """Decode the image (fetching it first if only its URL is known), upright, in ``mode``."""
        with PILImage.open(io.BytesIO(self.as_bytes())) as opened:
            upright = ImageOps.exif_transpose(opened)
            return upright.convert(mode)


def _normalized_format(format: str) -> str:
    """PIL's name for an image format, lower-cased: ``"JPG"`` and ``"jpg"`` become ``"jpeg"``."""
    name = format.lower()
    return "jpeg" if name == "jpg" else name


def _dimensions(source: BinaryIO) -> tuple[int | None, int | None]:
    """Width and height from an image header (the pixels are not decoded)."""
    try:
        with PILImage.open(source) as opened:
            return opened.width, opened.height
    except (UnidentifiedImageError, OSError):
        return None, None


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
    "get_image_size",
]
