"""``fal.toolkit.image.safety_checker``: flag and black out NSFW images, as fal's apps do.

The same models as fal: ``CompVis/stable-diffusion-safety-checker`` (version 1) and
``Falconsai/nsfw_image_detection`` (version 2, the default), loaded once per process from the
Hugging Face cache (``minifal.toolkit.image.hf_models``: a clear ``ModelWeightsMissing`` error
when they are not there). They run on the runner's GPU when it has one, else on the CPU (fal
assumes CUDA). ``postprocess_images(..., enable_safety_checker=False)`` needs no model: every
image passes, flagged ``False``.
"""

from __future__ import annotations

import functools
from typing import Any

from minifal.toolkit.image import filter_by
from minifal.toolkit.image.hf_models import load_pretrained, torch_device
from minifal.toolkit.image.nsfw_filter.model import get_model

SAFETY_CHECKER_MODEL = "CompVis/stable-diffusion-safety-checker"


@functools.cache
def load_safety_checker() -> tuple[Any, Any]:
    """The feature extractor and the Stable Diffusion safety checker, loaded once."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import AutoFeatureExtractor

    device = torch_device()
    dtype = torch.float16 if device == "cuda" else torch.float32

    def load() -> tuple[Any, Any]:
        extractor = AutoFeatureExtractor.from_pretrained(SAFETY_CHECKER_MODEL)
        checker = StableDiffusionSafetyChecker.from_pretrained(
            SAFETY_CHECKER_MODEL, torch_dtype=dtype
        )
        return extractor, checker.to(device)

    return load_pretrained(SAFETY_CHECKER_MODEL, load)


def run_safety_checker(pil_images: list[Any]) -> list[bool]:
    """Version 1: the Stable Diffusion safety checker's verdict for each image."""
    import numpy as np

    extractor, checker = load_safety_checker()
    clip_input = extractor(pil_images, return_tensors="pt").pixel_values
    clip_input = clip_input.to(device=checker.device, dtype=checker.dtype)
    _, has_nsfw_concept = checker(
        images=[np.array(image) for image in pil_images], clip_input=clip_input
    )
    return [bool(flag) for flag in has_nsfw_concept]


def run_safety_checker_v2(pil_images: list[Any], nsfw_threshold: float = 0.5) -> list[bool]:
    """Version 2: an image is flagged when the NSFW classifier's probability passes the bar."""
    from minifal.toolkit.image.nsfw_filter.inference import check_nsfw_content

    return [check_nsfw_content(image.convert("RGB")) > nsfw_threshold for image in pil_images]


def postprocess_images(
    pil_images: list[Any],
    enable_safety_checker: bool = True,
    safety_checker_version: int = 2,
) -> dict[str, Any]:
    """``{"images": [...], "has_nsfw_concepts": [...]}`` with flagged images blacked out."""
    if enable_safety_checker:
        check = run_safety_checker_v2 if safety_checker_version == 2 else run_safety_checker
        flags = check(pil_images)
    else:
        flags = [False] * len(pil_images)
    return {"images": filter_by(flags, pil_images), "has_nsfw_concepts": flags}


__all__ = [
    "get_model",
    "load_safety_checker",
    "postprocess_images",
    "run_safety_checker",
    "run_safety_checker_v2",
]
