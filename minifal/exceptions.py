"""Exceptions an app raises to shape its HTTP answer, as in ``fal.exceptions``.

The runner turns each into a status code and a JSON body (see ``minifal.runner.errors``).
"""

from __future__ import annotations


class AppException(Exception):
    """An error the app reports to its caller: ``{"detail": message}`` with ``status_code``."""

    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class FieldException(Exception):
    """A problem with one input field, reported in FastAPI's validation-error shape."""

    def __init__(
        self,
        field: str,
        message: str,
        status_code: int = 422,
        type: str = "value_error",
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status_code = status_code
        self.type = type

    def to_detail(self) -> list[dict]:
        return [{"loc": ["body", self.field], "msg": self.message, "type": self.type}]


class RequestCancelledException(Exception):
    """The request was cancelled by its caller (HTTP 499)."""

    def __init__(self, message: str = "Request cancelled by the client.") -> None:
        super().__init__(message)
        self.message = message


class GPUException(Exception):
    """The GPU is in a bad state; the runner answers 503 so the request can go elsewhere."""

    def __init__(self, message: str = "GPU error") -> None:
        super().__init__(message)
        self.message = message


class CUDAOutOfMemoryException(GPUException):
    def __init__(self, message: str = "CUDA out of memory") -> None:
        super().__init__(message)


class FileTooLargeError(Exception):
    """A file given by URL is larger than the allowed size."""

    def __init__(self, message: str = "File is too large.", status_code: int = 413) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


__all__ = [
    "AppException",
    "CUDAOutOfMemoryException",
    "FieldException",
    "FileTooLargeError",
    "GPUException",
    "RequestCancelledException",
]
