"""``fal.toolkit.image.nsfw_filter.env``: what the NSFW filter needs installed."""

from __future__ import annotations

from pathlib import Path

CURR_DIR = Path(__file__).resolve().parent
REQUIREMENTS = ["accelerate", "Pillow", "torch", "transformers"]


def get_requirements() -> list[str]:
    return list(REQUIREMENTS)
