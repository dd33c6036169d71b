"""``fal.toolkit.constraints``: limits on input images and videos, published and enforced.

On fal these dataclasses are documentation: ``to_xfal`` puts their set limits in the field's
schema under ``x-fal``, and fal only checks that a config is satisfiable. minifal keeps that
(same fields, same schema, same construction errors) and also enforces them:

- a field made with ``ImageSizeField(constraints=...)`` rejects a size outside the limits (422
  naming the field), since the size is known without fetching anything;
- each config has a ``check...`` method an endpoint calls once it knows the file's properties
  (``ImageValidationConfig.check_image``, ``VideoValidationConfig.check_video``,
  ``ImageSizeConstraints.check_size``); a violation raises :class:`ConstraintViolation`, a
  ``ValueError`` whose message names the limit. Raise it as ``FieldException`` to answer 422.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

_NON_SCHEMA_FIELDS = {"timeout"}
"""Runtime settings of the downloader, not limits a client can check: never in ``x-fal``."""

_BOUND_PAIRS = (
    ("min_width", "max_width"),
    ("min_height", "max_height"),
    ("min_area", "max_area"),
    ("min_frames", "max_frames"),
    ("min_duration", "max_duration"),
    ("min_fps", "max_fps"),
    ("min_aspect_ratio", "max_aspect_ratio"),
)


class ConstraintViolation(ValueError):
    """An input outside a config's limits; the message says which limit and by how much."""


def to_xfal(
    config: ImageSizeConstraints
    | ImageValidationConfig
    | VideoValidationConfig
    | VideoNormalizationConfig,
) -> dict[str, Any]:
    """A config's set (non-``None``) limits, as the ``x-fal`` schema payload."""
    return {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if value is not None and key not in _NON_SCHEMA_FIELDS
    }


def _validate_bounds(config: Any) -> None:
    """Refuse a config no input could satisfy; equal bounds pin an exact value."""
    for low, high in _BOUND_PAIRS:
        lower, upper = getattr(config, low, None), getattr(config, high, None)
        if lower is not None and upper is not None and lower > upper:
            raise ValueError(f"{low} ({lower}) must not exceed {high} ({upper}).")


def _validate_aspect_ratio_pair(low: float | None, high: float | None) -> None:
    # One bound alone is ambiguous: an aspect ratio reads either way round.
    if (low is None) != (high is None):
        raise ValueError("min_aspect_ratio and max_aspect_ratio must be provided together.")


def _check_range(config: Any, quantity: str, value: float | None, unit: str = "") -> None:
    """Check ``value`` against the config's ``min_<quantity>`` / ``max_<quantity>``, if set."""
    if value is None:
        return
    lower = getattr(config, f"min_{quantity}", None)
    upper = getattr(config, f"max_{quantity}", None)
    label = quantity.replace("_", " ")
    if lower is not None and value < lower:
        raise ConstraintViolation(f"{label} {value}{unit} is below the minimum of {lower}{unit}")
    if upper is not None and value > upper:
        raise ConstraintViolation(f"{label} {value}{unit} is above the maximum of {upper}{unit}")


def _check_dimensions(config: Any, width: int | None, height: int | None) -> None:
    _check_range(config, "width", width, "px")
    _check_range(config, "height", height, "px")
    if width is not None and height is not None:
        _check_range(config, "area", width * height, "px")
        if height > 0:
            _check_range(config, "aspect_ratio", round(width / height, 6))


def _check_file_size(config: Any, file_size: int | None) -> None:
    limit = getattr(config, "max_file_size", None)
    if file_size is not None and limit is not None and file_size > limit:
        raise ConstraintViolation(
            f"file size {file_size} bytes is above the maximum of {limit} bytes"
        )


@dataclasses.dataclass(frozen=True)
class ImageSizeConstraints:
    """Limits on the image size a model can generate (``ImageSizeField(constraints=...)``)."""

    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_area: int | None = None
    max_area: int | None = None
    multiple_of: int | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None

    def __post_init__(self) -> None:
        _validate_bounds(self)
        _validate_aspect_ratio_pair(self.min_aspect_ratio, self.max_aspect_ratio)
        if self.multiple_of is not None and self.multiple_of <= 0:
            raise ValueError(f"multiple_of ({self.multiple_of}) must be positive.")

    def check_size(self, width: int, height: int) -> None:
        """Raise :class:`ConstraintViolation` if ``width`` x ``height`` breaks a limit."""
        _check_dimensions(self, width, height)
        if self.multiple_of is not None:
            for name, value in (("width", width), ("height", height)):
                if value % self.multiple_of:
                    raise ConstraintViolation(
                        f"{name} {value}px is not a multiple of {self.multiple_of}"
                    )


class ImageValidationOptions(TypedDict, total=False):
    """Validation options accepted by input-image helpers."""

    max_file_size: int | None
    min_width: int | None
    min_height: int | None
    max_width: int | None
    max_height: int | None
    min_aspect_ratio: float | None
    max_aspect_ratio: float | None
    timeout: float | None


@dataclasses.dataclass(frozen=True)
class ImageValidationConfig:
    """Limits on an input image; ``timeout`` is the download's, never published."""

    max_file_size: int | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    timeout: float = 20.0

    def __post_init__(self) -> None:
        _validate_bounds(self)
        _validate_aspect_ratio_pair(self.min_aspect_ratio, self.max_aspect_ratio)

    def check_image(
        self,
        width: int | None = None,
        height: int | None = None,
        file_size: int | None = None,
    ) -> None:
        """Raise :class:`ConstraintViolation` if a known property breaks a limit."""
        _check_file_size(self, file_size)
        _check_dimensions(self, width, height)


class VideoValidationOptions(TypedDict, total=False):
    """Validation options accepted by input-video helpers."""

    max_file_size: int | None
    min_width: int | None
    min_height: int | None
    max_width: int | None
    max_height: int | None
    min_area: int | None
    max_area: int | None
    min_aspect_ratio: float | None
    max_aspect_ratio: float | None
    min_frames: int | None
    max_frames: int | None
    min_duration: float | None
    max_duration: float | None
    min_fps: float | None
    max_fps: float | None


@dataclasses.dataclass(frozen=True)
class VideoValidationConfig:
    """Limits on an input video (areas are per frame, in pixels)."""

    max_file_size: int | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_area: int | None = None
    max_area: int | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    min_frames: int | None = None
    max_frames: int | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    min_fps: float | None = None
    max_fps: float | None = None

    def __post_init__(self) -> None:
        _validate_bounds(self)
        _validate_aspect_ratio_pair(self.min_aspect_ratio, self.max_aspect_ratio)

    def check_video(
        self,
        width: int | None = None,
        height: int | None = None,
        frames: int | None = None,
        duration: float | None = None,
        fps: float | None = None,
        file_size: int | None = None,
    ) -> None:
        """Raise :class:`ConstraintViolation` if a known property breaks a limit."""
        _check_file_size(self, file_size)
        _check_dimensions(self, width, height)
        _check_range(self, "frames", frames)
        _check_range(self, "duration", duration, "s")
        _check_range(self, "fps", fps)


@dataclasses.dataclass(frozen=True)
class VideoNormalizationConfig:
    """What a model does to a video it accepts but reshapes (rescale, trim, resample)."""

    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_area: int | None = None
    max_area: int | None = None
    max_duration: float | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        _validate_bounds(self)


__all__ = [
    "ConstraintViolation",
    "ImageSizeConstraints",
    "ImageValidationConfig",
    "ImageValidationOptions",
    "VideoNormalizationConfig",
    "VideoValidationConfig",
    "VideoValidationOptions",
    "to_xfal",
]
