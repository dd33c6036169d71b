"""``fal.toolkit.image.nsfw_filter.model``: Falconsai's NSFW classifier, loaded once.

fal points ``HF_HOME`` at ``/data/models`` while loading; minifal leaves ``HF_HOME`` as the
runner set it (``DATA_DIR/.cache/huggingface`` by default).
"""

from __future__ import annotations

import functools
from typing import Any

from minifal.toolkit.image.hf_models import load_pretrained

NSFW_MODEL = "Falconsai/nsfw_image_detection"


@functools.cache
def get_model() -> tuple[Any, Any]:
    """The image classifier and its processor."""
    from transformers import AutoModelForImageClassification, ViTImageProcessor

    def load() -> tuple[Any, Any]:
        model = AutoModelForImageClassification.from_pretrained(NSFW_MODEL)
        return model, ViTImageProcessor.from_pretrained(NSFW_MODEL)

    return load_pretrained(NSFW_MODEL, load)
