"""Loading the Hugging Face models behind fal's image safety helpers, with a clear failure.

fal's safety checker and NSFW filter load public models from the Hugging Face hub. minifal loads
the same models through ``from_pretrained`` (the hub cache under ``HF_HOME``, which defaults to
``DATA_DIR/.cache/huggingface``): present in the cache, they load; absent and not downloadable
(offline, ``HF_HUB_OFFLINE=1``, no network), :class:`ModelWeightsMissing` names the model and
the cache it looked in, instead of a deep transformers traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ModelWeightsMissing(RuntimeError):
    """A model the toolkit needs is not in the Hugging Face cache and could not be fetched."""


def load_pretrained(model_id: str, load: Callable[[], T]) -> T:
    """Run ``load`` (a ``from_pretrained`` call); turn a missing model into a clear error."""
    try:
        return load()
    except OSError as exc:
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise ModelWeightsMissing(
            f"The model {model_id!r} is not in the Hugging Face cache ({cache}) and could not "
            f"be downloaded: {exc}. Put it there once (e.g. `huggingface-cli download "
            f"{model_id}` with HF_HOME={cache}), or turn the check off "
            "(postprocess_images(..., enable_safety_checker=False))."
        ) from exc


def torch_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (fal assumes ``cuda``)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
