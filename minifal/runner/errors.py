"""What an exception raised by app code becomes on the wire (fal's table, FAL_API.md §2)."""

from __future__ import annotations

import logging
import re

from fastapi.responses import JSONResponse

from minifal.exceptions import (
    AppException,
    FieldException,
    FileTooLargeError,
    GPUException,
    RequestCancelledException,
)
from minifal.toolkit.url_fetch import DownloadError

logger = logging.getLogger("minifal.runner")

# An error naming one of these is the GPU's (or its driver's) fault: the runner answers 503 so the
# platform can retry the request elsewhere.
_GPU_ERROR = re.compile(r"cuda|cudnn|nccl|cublas|triton|out of memory", re.IGNORECASE)

STATUS_CLIENT_CLOSED = 499
INTERNAL_SERVER_ERROR = "Internal Server Error"


def is_gpu_error(exc: BaseException) -> bool:
    if isinstance(exc, GPUException):
        return True
    return bool(_GPU_ERROR.search(f"{type(exc).__module__}.{type(exc).__name__}: {exc}"))


def error_response(exc: Exception, request_id: str | None = None) -> JSONResponse:
    """The response for an exception that escaped an endpoint. Tracebacks go to the log only."""
    headers = {"x-fal-request-id": request_id} if request_id else None
    if isinstance(exc, FieldException):
        return JSONResponse({"detail": exc.to_detail()}, exc.status_code, headers)
    if isinstance(exc, AppException):
        return JSONResponse({"detail": exc.message}, exc.status_code, headers)
    if isinstance(exc, RequestCancelledException):
        return JSONResponse({"detail": exc.message}, STATUS_CLIENT_CLOSED, headers)
    if isinstance(exc, DownloadError):
        return JSONResponse({"detail": str(exc)}, exc.status_code, headers)
    if isinstance(exc, FileTooLargeError):
        return JSONResponse({"detail": exc.message}, exc.status_code, headers)
    if is_gpu_error(exc):
        logger.exception("request %s failed with a GPU error", request_id)
        detail = f"GPU error on this runner ({type(exc).__name__}); retry on another runner"
        return JSONResponse({"detail": detail}, 503, headers)
    logger.exception("request %s failed", request_id)
    return JSONResponse({"detail": INTERNAL_SERVER_ERROR}, 500, headers)
