"""``fal.toolkit.image.nsfw_filter.inference``: the NSFW probability of one image.

fal also deploys ``run_nsfw_estimation_on_fal`` as a ``fal.function`` on an A6000; locally it is
the same computation run in this process.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from minifal.toolkit.image import read_image_from_url
from minifal.toolkit.image.nsfw_filter.env import get_requirements
from minifal.toolkit.image.nsfw_filter.model import get_model


class NSFWImageDetectionInput(BaseModel):
    image_url: str = Field(
        description="Input image url.",
        examples=[
            "https://storage.googleapis.com/falserverless/model_tests/remove_background/elephant.jpg",
        ],
    )


class NSFWImageDetectionOutput(BaseModel):
    nsfw_probability: float = Field(description="The probability of the image being NSFW.")


def check_nsfw_content(pil_image: Any) -> float:
    """The classifier's probability for the ``nsfw`` label."""
    import torch

    model, processor = get_model()
    with torch.no_grad():
        logits = model(**processor(images=pil_image, return_tensors="pt")).logits.squeeze()
    probabilities = torch.softmax(logits, dim=0)
    nsfw_index = model.config.label2id.get("nsfw")
    if nsfw_index is None:
        raise ValueError("NSFW class not found in model output.")
    return float(probabilities[int(nsfw_index)].item())


def run_nsfw_estimation(input: NSFWImageDetectionInput) -> NSFWImageDetectionOutput:
    image = read_image_from_url(input.image_url)
    return NSFWImageDetectionOutput(nsfw_probability=check_nsfw_content(image))


def run_nsfw_estimation_on_fal(input: NSFWImageDetectionInput) -> NSFWImageDetectionOutput:
    """fal runs this on a GPU machine of its own; minifal runs it here."""
    return run_nsfw_estimation(input)


__all__ = [
    "NSFWImageDetectionInput",
    "NSFWImageDetectionOutput",
    "check_nsfw_content",
    "get_requirements",
    "run_nsfw_estimation",
    "run_nsfw_estimation_on_fal",
]
