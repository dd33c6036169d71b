"""GPU errors (fal's ``fal.exceptions.gpu``): answered 503 so the request can go elsewhere."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType

from minifal.exceptions._base import AppException

GPU_ERROR_STATUS_CODE = 503
CUDA_OOM_MESSAGE = "CUDA error: out of memory"
_CUDA_OOM_MESSAGE = CUDA_OOM_MESSAGE  # fal's private names, which its tests import
_GPU_ERROR_STATUS_CODE = GPU_ERROR_STATUS_CODE
GPU_ERROR_MARKERS = (
    "cuda",
    "cudnn",
    "nvml",
    "nccl",
    "cublas",
    "cufft",
    "cusolver",
    "cusparse",
    "triton",
)


@dataclass(eq=False)
class GPUException(AppException):
    """The GPU (or its driver) failed; the platform replaces such a runner and retries."""

    message: str = "GPU error"
    status_code: int = GPU_ERROR_STATUS_CODE


@dataclass(eq=False)
class GPUOutOfMemoryException(GPUException):
    """A GPU operation ran out of memory."""


@dataclass(eq=False)
class CUDAOutOfMemoryException(GPUOutOfMemoryException):
    """A CUDA operation ran out of memory."""

    message: str = CUDA_OOM_MESSAGE


def is_cuda_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory errors, and the cuDNN/NVML failures that mean the same."""
    if not isinstance(exc, RuntimeError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return False
    text = exc.args[0]
    return (
        ("CUDA" in text and "out of memory" in text)
        or "NVML_SUCCESS == r INTERNAL ASSERT FAILED" in text
        or "CUDNN_STATUS_INTERNAL_ERROR" in text
        or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in text
    )


def is_gpu_error(exc: BaseException) -> bool:
    """Any error whose message names a GPU library (fal's last-resort check)."""
    text = str(exc).lower()
    return any(marker in text for marker in GPU_ERROR_MARKERS)


class catch_gpu_exceptions(contextlib.ContextDecorator):
    """Context manager and decorator: a GPU error inside becomes ``CUDAOutOfMemoryException`` or
    ``GPUException`` (HTTP 503), chained to the original."""

    def __enter__(self) -> catch_gpu_exceptions:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is None or isinstance(exc, GPUException):
            return False
        if is_cuda_out_of_memory(exc):
            raise CUDAOutOfMemoryException() from exc
        if is_gpu_error(exc):
            raise GPUException() from exc
        return False
