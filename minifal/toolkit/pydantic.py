"""``fal.toolkit.pydantic``: ``FalBaseModel`` (field order, hidden fields) and ``Hidden``.

The schema a ``FalBaseModel`` produces is fal's, byte for byte: fields marked with
``Hidden(Field(default=...))`` or listed in ``SCHEMA_IGNORES`` get ``"ui": {"hidden": true}``,
and ``FIELD_ORDERS`` moves the listed fields first in ``properties``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from minifal.toolkit.audio import AudioField
from minifal.toolkit.file import FileField
from minifal.toolkit.image import ImageField
from minifal.toolkit.video import VideoField

IS_PYDANTIC_V2 = True

_T = TypeVar("_T")
_FAL_HIDDEN = "_fal_hidden"
"""The marker fal puts in a hidden field's metadata."""


def Hidden(field: _T) -> _T:
    """Mark a ``Field(...)`` as hidden in the UI; it must have a default (hidden = not asked)."""
    if not isinstance(field, FieldInfo):
        raise TypeError(
            f"Hidden() requires a Field instance, got {type(field).__name__}. "
            "Usage: Hidden(Field(default=...))"
        )
    if field.default is PydanticUndefined and field.default_factory is None:
        raise ValueError("Hidden fields must have a default or default_factory.")
    field.metadata = [*(field.metadata or []), _FAL_HIDDEN]
    return field


def _is_hidden(field_info: FieldInfo) -> bool:
    return _FAL_HIDDEN in (field_info.metadata or [])


def _bind_context_recursively(node: Any, path: tuple[str | int, ...]) -> None:
    """Tell nested values that can use it where they sit (``loc``) for error messages."""
    bind = getattr(node, "_bind_context", None)
    if callable(bind):
        bind(loc=path)
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            value = getattr(node, name, None)
            if value is not None:
                _bind_context_recursively(value, (*path, name))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _bind_context_recursively(item, (*path, index))


def _apply_schema_modifications(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Hidden fields and ``SCHEMA_IGNORES`` get ``ui.hidden``; ``FIELD_ORDERS`` go first."""
    properties = schema.get("properties", {})
    ignored = getattr(model, "SCHEMA_IGNORES", set())
    for name, field_info in model.model_fields.items():
        if name in properties and (_is_hidden(field_info) or name in ignored):
            properties[name].setdefault("ui", {})["hidden"] = True
    order = getattr(model, "FIELD_ORDERS", [])
    if order:
        first = {name: properties.pop(name) for name in order if name in properties}
        schema["properties"] = {**first, **properties}


class FalBaseModel(BaseModel):
    """
    Base model for fal applications with field ordering, visibility control,
    and context binding for error reporting.
    """

    SCHEMA_IGNORES: ClassVar[set[str]] = set()
    FIELD_ORDERS: ClassVar[list[str]] = []

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__dict__.get("SCHEMA_IGNORES"):
            warnings.warn(
                "FalBaseModel.SCHEMA_IGNORES is deprecated. Use Hidden(Field(...)) instead.",
                DeprecationWarning,
                stacklevel=3,
            )

        def schema_extra(schema: dict[str, Any], model_cls: type = cls) -> None:
            _apply_schema_modifications(schema, model_cls)

        cls.model_config = {**(cls.model_config or {}), "json_schema_extra": schema_extra}

    @model_validator(mode="after")
    def _inject_context_paths(self) -> FalBaseModel:
        for name in type(self).model_fields:
            value = getattr(self, name, None)
            if value is not None:
                _bind_context_recursively(value, (name,))
        return self


__all__ = [
    "IS_PYDANTIC_V2",
    "AudioField",
    "FalBaseModel",
    "Field",
    "FileField",
    "Hidden",
    "ImageField",
    "VideoField",
]
