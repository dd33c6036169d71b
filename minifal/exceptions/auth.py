"""fal's ``fal.exceptions.auth``."""

from __future__ import annotations

from minifal.exceptions._base import FalServerlessException


class UnauthenticatedException(FalServerlessException):
    """fal raises it when its CLI or SDK has no credentials. minifal never needs fal
    credentials; the name exists so that code catching it imports unchanged."""

    def __init__(self) -> None:
        super().__init__(
            "You must be authenticated. Use fal auth login or fal profile key to set your fal key."
        )
