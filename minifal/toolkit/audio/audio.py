"""``fal.toolkit.audio.audio``: ``Audio``, a :class:`File` the UI shows as audio."""

from __future__ import annotations

from typing import Any

from minifal.toolkit.file.file import IS_PYDANTIC_V2, File, ui_field


def AudioField(*args: Any, **kwargs: Any) -> Any:
    """``pydantic.Field`` that marks the field as audio in the schema (``ui.field``)."""
    return ui_field("audio", *args, **kwargs)


class Audio(File):
    # No docstring: it would become the schema's description, which fal's Audio has not.
    model_config = {"json_schema_extra": {"ui": {"field": "audio"}}}


__all__ = ["IS_PYDANTIC_V2", "Audio", "AudioField"]
