"""``fal.toolkit.video.video``: ``Video``, a :class:`File` the UI shows as video, and
``VideoField``, which publishes a video input's limits under ``x-fal`` as fal does.

minifal does not decode videos, so it cannot enforce a ``VideoField``'s constraints by itself:
an endpoint that knows a video's properties checks them with
``VideoValidationConfig.check_video`` (see ``minifal.toolkit.constraints``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from minifal.toolkit.constraints import VideoNormalizationConfig, VideoValidationConfig, to_xfal
from minifal.toolkit.file.file import IS_PYDANTIC_V2, File


def _merge_ui(schema: dict[str, Any], ui: dict | None) -> None:
    schema_ui = schema.setdefault("ui", {})
    if ui:
        schema_ui.update(ui)
    schema_ui.setdefault("field", "video")


def VideoField(
    *args: Any,
    constraints: VideoValidationConfig | None = None,
    combined_constraints: VideoValidationConfig | None = None,
    normalization: VideoNormalizationConfig | None = None,
    ui: dict | None = None,
    **kwargs: Any,
) -> Any:
    """``pydantic.Field`` for a video input: ``ui.field = "video"`` plus its ``x-fal`` limits.

    ``constraints`` reject a video, ``normalization`` describes how an accepted one is reshaped
    (under ``x-fal.normalization``), ``combined_constraints`` bound the totals of a list of
    videos (under ``x-fal.combined``).
    """
    xfal: dict[str, Any] = {}
    if constraints is not None:
        xfal.update(to_xfal(constraints))
    if combined_constraints is not None and (combined := to_xfal(combined_constraints)):
        xfal["combined"] = combined
    if normalization is not None and (applied := to_xfal(normalization)):
        xfal["normalization"] = applied
    fal_extra = {"x-fal": xfal} if xfal else {}

    extra = kwargs.pop("json_schema_extra", None) or {}
    if callable(extra):
        original = extra

        def merged(schema: dict[str, Any]) -> None:
            original(schema)
            _merge_ui(schema, ui)
            schema.update(fal_extra)

        kwargs["json_schema_extra"] = merged
    else:
        _merge_ui(extra, ui)
        extra.update(fal_extra)
        kwargs["json_schema_extra"] = extra
    return Field(*args, **kwargs)


class Video(File):
    # No docstring: it would become the schema's description, which fal's Video has not.
    model_config = {"json_schema_extra": {"ui": {"field": "video"}}}


__all__ = ["IS_PYDANTIC_V2", "Video", "VideoField"]
