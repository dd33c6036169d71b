"""The exceptions an app raises to shape its HTTP answer (fal's ``fal/exceptions/_base.py``).

The runner turns each into a status code and a JSON body (``minifal.runner.errors``). They are
dataclasses with fal's fields, positional order and defaults, and two local choices: they stay
hashable (``eq=False``), and ``AppException.status_code`` defaults to 500 where fal requires it.
"""

from __future__ import annotations

from dataclasses import dataclass


class FalServerlessException(Exception):
    """Base class of every fal exception."""


class _MessageException(FalServerlessException):
    """``str(exc)`` is the message however the exception was built (keywords included)."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(eq=False)
class AppException(_MessageException):
    """An error the app reports to its caller: ``{"detail": message}`` with ``status_code``."""

    message: str
    status_code: int = 500


@dataclass(eq=False)
class FieldException(_MessageException):
    """A problem with one input field, answered in FastAPI's validation-error shape.

    ``billable_units``: what fal reports in ``x-fal-billable-units`` for this failed request.
    """

    field: str
    message: str
    status_code: int = 422
    type: str = "value_error"
    billable_units: int | float | str | None = 0

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def to_detail(self) -> list[dict]:
        return [{"loc": ["body", self.field], "msg": self.message, "type": self.type}]

    def to_pydantic_format(self) -> dict[str, list[dict]]:
        return {"detail": self.to_detail()}


@dataclass(eq=False)
class RequestCancelledException(_MessageException):
    """The request was cancelled by its caller (HTTP 499)."""

    message: str = "Request cancelled by the client."


@dataclass(eq=False)
class FileTooLargeError(_MessageException):
    """A file given by URL is larger than the allowed size (HTTP 413 here)."""

    message: str = "File is too large."
    status_code: int = 413


@dataclass(eq=False)
class AppFileUploadException(_MessageException):
    """Uploading one of the App's ``app_files`` failed (a deploy-time error on fal)."""

    message: str
    relative_path: str
