"""``fal.toolkit``: files and images, downloads, and the compiled-kernel cache."""

from pydantic import Field

__all__ = ["Field"]
