"""fal's wire formats between a ``DistributedRunner`` and its workers.

A payload, a streamed item and a result travel as bytes. Images, tensors and arrays inside them
(at any depth of lists and dicts) become dicts of encoded bytes: ``{"content_type", "data",
"url", ...}``; in text events (Server-Sent Events) the bytes are a ``data:`` URL instead, so the
event is JSON. The receiving side turns those dicts back into PIL images, tensors and arrays.

As in fal: a final image is encoded in ``image_format`` (JPEG at quality 95 by default), an
intermediate one always as JPEG at quality 60, to keep previews small.
"""

from __future__ import annotations

import base64
import json
import pickle
from io import BytesIO
from typing import Any

TENSOR_CONTENT_TYPE = "application/tensor"
NDARRAY_CONTENT_TYPE = "application/ndarray"
FINAL_JPEG_QUALITY = 95
PREVIEW_JPEG_QUALITY = 60


def has_type_name(maybe_type: Any, type_name: str) -> bool:
    """Whether a class (or an object's class) has ``type_name`` in its MRO, without importing
    the library that defines it (torch, numpy, PIL)."""
    cls = maybe_type if isinstance(maybe_type, type) else type(maybe_type)
    return any(base.__name__ == type_name for base in cls.__mro__)


def is_torch_tensor(obj: Any) -> bool:
    return has_type_name(obj, "Tensor")


def is_numpy_array(obj: Any) -> bool:
    return has_type_name(obj, "ndarray")


def is_pil_image(obj: Any) -> bool:
    # PIL's own classes only: ``fal.toolkit.Image`` is also a class named Image.
    cls = obj if isinstance(obj, type) else type(obj)
    return any(
        base.__name__ == "Image" and base.__module__.startswith("PIL") for base in cls.__mro__
    )


def _data_url(content_type: str, payload: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(payload).decode('ascii')}"


def _encoded(content_type: str, payload: bytes, as_data_urls: bool, **fields: Any) -> dict:
    return {
        "content_type": content_type,
        **fields,
        "data": None if as_data_urls else payload,
        "url": _data_url(content_type, payload) if as_data_urls else None,
    }


def _image_bytes(image: Any, image_format: str, is_final: bool) -> tuple[str, bytes]:
    if not is_final:
        image_format = "jpeg"
    if image_format == "jpeg" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # JPEG has no alpha or palette
    with BytesIO() as buffer:
        if image_format == "jpeg":
            quality = FINAL_JPEG_QUALITY if is_final else PREVIEW_JPEG_QUALITY
            image.save(buffer, format="jpeg", quality=quality)
        else:
            image.save(buffer, format=image_format)
        return image_format, buffer.getvalue()


def format_for_serialization(
    response: Any,
    image_format: str = "jpeg",
    is_final: bool = False,
    as_data_urls: bool = False,
) -> Any:
    """``response`` with its images, tensors and arrays replaced by encoded dicts."""
    if is_torch_tensor(response):
        import torch

        with BytesIO() as buffer:
            torch.save(response.detach().cpu(), buffer)
            encoded = buffer.getvalue()
        return _encoded(
            TENSOR_CONTENT_TYPE,
            encoded,
            as_data_urls,
            shape=list(response.shape),
            dtype=str(response.dtype),
        )
    if is_numpy_array(response):
        import numpy as np

        with BytesIO() as buffer:
            np.save(buffer, response)
            encoded = buffer.getvalue()
        return _encoded(
            NDARRAY_CONTENT_TYPE,
            encoded,
            as_data_urls,
            shape=list(response.shape),
            dtype=str(response.dtype),
        )
    if is_pil_image(response):
        width, height = response.size
        used_format, encoded = _image_bytes(response, image_format, is_final)
        return _encoded(f"image/{used_format}", encoded, as_data_urls, width=width, height=height)
    if isinstance(response, list):
        return [
            format_for_serialization(item, image_format, is_final, as_data_urls)
            for item in response
        ]
    if isinstance(response, dict):
        return {
            key: format_for_serialization(value, image_format, is_final, as_data_urls)
            for key, value in response.items()
        }
    return response


def _encoded_bytes(data: dict, what: str) -> bytes:
    if data.get("url"):
        return base64.b64decode(data["url"].split(",", 1)[1])
    if data.get("data"):
        return data["data"]
    raise ValueError(f"{what} data must contain either 'url' or 'data'.")


def format_deserialized_data(data: Any) -> Any:
    """The inverse of :func:`format_for_serialization`: encoded dicts back to objects."""
    if isinstance(data, list):
        return [format_deserialized_data(item) for item in data]
    if not isinstance(data, dict):
        return data
    content_type = data.get("content_type")
    if isinstance(content_type, str) and content_type.startswith("image/"):
        from PIL import Image

        return Image.open(BytesIO(_encoded_bytes(data, "Image")))
    if content_type == TENSOR_CONTENT_TYPE:
        import torch

        with BytesIO(_encoded_bytes(data, "Tensor")) as buffer:
            return torch.load(buffer)
    if content_type == NDARRAY_CONTENT_TYPE:
        import numpy as np

        with BytesIO(_encoded_bytes(data, "Numpy array")) as buffer:
            return np.load(buffer, allow_pickle=True)
    return {key: format_deserialized_data(value) for key, value in data.items()}


def distributed_serialize(obj: Any, is_final: bool = False, image_format: str = "jpeg") -> bytes:
    """``obj`` as bytes for the other side of the runner/worker channel."""
    formatted = format_for_serialization(obj, image_format=image_format, is_final=is_final)
    return pickle.dumps(formatted, protocol=pickle.HIGHEST_PROTOCOL)


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic model in a streamed result
        return value.model_dump(mode="json")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_text_event(obj: Any, is_final: bool = False, image_format: str = "jpeg") -> bytes:
    """``obj`` as one Server-Sent Event: ``data: <json>\\n\\n``, binaries as ``data:`` URLs."""
    formatted = format_for_serialization(
        obj, image_format=image_format, is_final=is_final, as_data_urls=True
    )
    return f"data: {json.dumps(formatted, default=_json_default)}\n\n".encode()


def distributed_deserialize(serialized: bytes | str) -> Any:
    """Bytes from :func:`distributed_serialize` (or a JSON string) back to objects."""
    data = json.loads(serialized) if isinstance(serialized, str) else pickle.loads(serialized)
    return format_deserialized_data(data)
