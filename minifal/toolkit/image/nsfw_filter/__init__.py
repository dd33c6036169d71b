"""``fal.toolkit.image.nsfw_filter``: the NSFW probability of an image (Falconsai's classifier)."""

from minifal.toolkit.image.nsfw_filter.inference import (
    NSFWImageDetectionInput,
    NSFWImageDetectionOutput,
    run_nsfw_estimation,
)

__all__ = ["NSFWImageDetectionInput", "NSFWImageDetectionOutput", "run_nsfw_estimation"]
