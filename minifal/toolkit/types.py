"""``fal.toolkit.types``: URL string types for inputs (``data:`` URIs and https URLs).

Same validation and schema as fal (a pattern, a length cap, ``format: data-uri | https-url``).
``as_temp_file()`` downloads the URL into a temp dir for the ``with`` block; the image variants'
``to_pil()`` decodes it (both through minifal's bounded fetcher).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from minifal.toolkit.downloads import download_file
from minifal.toolkit.image import read_image_from_url

IS_PYDANTIC_V2 = True

MAX_DATA_URI_LENGTH = 10 * 1024 * 1024
MAX_HTTPS_URL_LENGTH = 2048
HTTP_URL_REGEX = r"^https:\/\/(?:[a-zA-Z0-9-]+\.)+[a-zA-Z]{2,}(?::\d{1,5})?(?:\/[^\s]*)?$"


class DownloadFileMixin:
    @contextmanager
    def as_temp_file(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory() as temp_dir:
            yield download_file(str(self), temp_dir)


class DownloadImageMixin:
    def to_pil(self) -> Any:
        return read_image_from_url(str(self))


def _string_schema(pattern: str, max_length: int) -> dict[str, Any]:
    return {"type": "str", "pattern": pattern, "max_length": max_length, "strip_whitespace": True}


class DataUri(DownloadFileMixin, str):
    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: Any) -> Any:
        return _string_schema("^data:", MAX_DATA_URI_LENGTH)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        json_schema = handler(core_schema)
        json_schema.update(format="data-uri")
        return json_schema


class HttpsUrl(DownloadFileMixin, str):
    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: Any) -> Any:
        return _string_schema(HTTP_URL_REGEX, MAX_HTTPS_URL_LENGTH)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        json_schema = handler(core_schema)
        json_schema.update(format="https-url")
        return json_schema


class ImageHttpsUrl(DownloadImageMixin, HttpsUrl):
    pass


class ImageDataUri(DownloadImageMixin, DataUri):
    pass


FileInput = HttpsUrl | DataUri
ImageInput = ImageHttpsUrl | ImageDataUri

__all__ = [
    "HTTP_URL_REGEX",
    "IS_PYDANTIC_V2",
    "MAX_DATA_URI_LENGTH",
    "MAX_HTTPS_URL_LENGTH",
    "DataUri",
    "DownloadFileMixin",
    "DownloadImageMixin",
    "FileInput",
    "HttpsUrl",
    "ImageDataUri",
    "ImageHttpsUrl",
    "ImageInput",
]
