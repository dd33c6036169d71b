"""Signatures of app methods with their annotations resolved.

App files often use ``from __future__ import annotations``; FastAPI would evaluate those strings
in the wrong module, so the runner resolves them against the app's own module first.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any


def resolved_signature(method: Callable[..., Any]) -> inspect.Signature:
    """The bound method's signature (no ``self``) with real types instead of strings."""
    function = getattr(method, "__func__", method)
    hints = typing.get_type_hints(function, include_extras=True)
    signature = inspect.signature(method)
    parameters = [
        parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
        for parameter in signature.parameters.values()
    ]
    return signature.replace(
        parameters=parameters,
        return_annotation=hints.get("return", signature.return_annotation),
    )
