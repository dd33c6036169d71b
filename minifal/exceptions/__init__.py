"""``fal.exceptions``: what an app raises to shape its HTTP answer, with fal's names and layout.

The runner maps each to a status code and a JSON body (``minifal.runner.errors``).

fal's module path: imported by the package root, the runner, the toolkit and ``distributed``;
it imports nothing of minifal.
"""

from __future__ import annotations

from minifal.exceptions._base import (
    AppException,
    AppFileUploadException,
    FalServerlessException,
    FieldException,
    FileTooLargeError,
    RequestCancelledException,
)
from minifal.exceptions.auth import UnauthenticatedException
from minifal.exceptions.gpu import (
    CUDAOutOfMemoryException,
    GPUException,
    GPUOutOfMemoryException,
    catch_gpu_exceptions,
)

__all__ = [
    "AppException",
    "AppFileUploadException",
    "CUDAOutOfMemoryException",
    "FalServerlessException",
    "FieldException",
    "FileTooLargeError",
    "GPUException",
    "GPUOutOfMemoryException",
    "RequestCancelledException",
    "UnauthenticatedException",
    "catch_gpu_exceptions",
]
