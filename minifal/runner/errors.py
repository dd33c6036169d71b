"""What an exception raised by app code becomes on the wire (fal's table, FAL_API.md §2).

``error_response`` answers an exception that escaped an endpoint; ``install_error_handlers``
gives the FastAPI app fal's answers for a path it does not serve (404) and an input that fails
validation (422). Both of those carry ``x-fal-billable-units: 0``, as fal's do: no inference
ran, so the caller is charged nothing.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from minifal.billing import BILLABLE_UNITS_HEADER
from minifal.exceptions import (
    AppException,
    CUDAOutOfMemoryException,
    FieldException,
    FileTooLargeError,
    GPUException,
    RequestCancelledException,
)
from minifal.exceptions.gpu import GPU_ERROR_MARKERS, is_cuda_out_of_memory, is_gpu_error
from minifal.runner_contract import REQUEST_ID_HEADER
from minifal.toolkit.url_fetch import DownloadError

logger = logging.getLogger("minifal.runner")

STATUS_CLIENT_CLOSED = 499
INTERNAL_SERVER_ERROR = "Internal Server Error"
NOT_BILLED = {BILLABLE_UNITS_HEADER: "0"}


def gpu_exception_for(exc: BaseException) -> GPUException | None:
    """The ``GPUException`` an error that names no status stands for, or None when it is not
    the GPU's fault.

    fal's checks (``fal.exceptions.gpu``): a CUDA out-of-memory error answers as
    ``CUDAOutOfMemoryException``, any error whose message names a GPU library as
    ``GPUException``. minifal also counts an error whose class lives in a GPU library (a Triton
    error says "out of resource", not "triton").
    """
    if is_cuda_out_of_memory(exc):
        return CUDAOutOfMemoryException()
    module = type(exc).__module__.lower()
    if is_gpu_error(exc) or any(marker in module for marker in GPU_ERROR_MARKERS):
        return GPUException()
    return None


def error_response(exc: Exception, request_id: str | None = None) -> JSONResponse:
    """The response for an exception that escaped an endpoint. Tracebacks go to the log only.

    As in fal, an exception that names its answer (fal's exception classes) gets it, whatever
    its message says; only any other error is checked for a GPU failure.
    """
    headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
    if isinstance(exc, GPUException):
        return _gpu_error_response(exc, request_id, headers)
    if isinstance(exc, FieldException):
        return _field_exception_response(exc, request_id, headers)
    if isinstance(exc, AppException):
        return JSONResponse({"detail": exc.message}, exc.status_code, headers)
    if isinstance(exc, RequestCancelledException):
        return JSONResponse({"detail": exc.message}, STATUS_CLIENT_CLOSED, headers)
    if isinstance(exc, DownloadError):
        return JSONResponse({"detail": str(exc)}, exc.status_code, headers)
    if isinstance(exc, FileTooLargeError):
        return JSONResponse({"detail": exc.message}, exc.status_code, headers)
    if isinstance(exc, StarletteHTTPException):
        # FastAPI's own HTTPException, raised by the app: its status and detail, as on fal.
        headers = {**headers, **(exc.headers or {})}
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers)
    gpu_exception = gpu_exception_for(exc)
    if gpu_exception is not None:
        return _gpu_error_response(gpu_exception, request_id, headers)
    logger.exception("request %s failed", request_id)
    return JSONResponse({"detail": INTERNAL_SERVER_ERROR}, 500, headers)


def _gpu_error_response(
    exc: GPUException, request_id: str | None, headers: dict[str, str]
) -> JSONResponse:
    """503 (the exception's status) so the request can go to another runner. Called while the
    original error is handled: the log gets its traceback, which tells the operator which
    runner's GPU failed, and how."""
    logger.exception("request %s failed with a GPU error", request_id)
    return JSONResponse({"detail": exc.message}, exc.status_code, headers)


def _field_exception_response(
    exc: FieldException, request_id: str | None, headers: dict[str, str]
) -> JSONResponse:
    """fal's answer: FastAPI's validation-error body, and the exception's ``billable_units``
    (when not zero or None) in ``x-fal-billable-units``: whole for an int, with 8 decimals for
    a float or a numeric string."""
    if exc.billable_units:
        try:
            units = float(exc.billable_units)
        except (TypeError, ValueError):
            # fal's handler fails on it, which answers 500: the app's bug, not the caller's.
            logger.error(
                "request %s: FieldException.billable_units=%r is not a number",
                request_id,
                exc.billable_units,
            )
            return JSONResponse({"detail": INTERNAL_SERVER_ERROR}, 500, headers)
        whole = isinstance(exc.billable_units, int)
        headers = {**headers, BILLABLE_UNITS_HEADER: format(units, ".0f" if whole else ".8f")}
    return JSONResponse({"detail": exc.to_detail()}, exc.status_code, headers)


def _binary_input(value: bytes | bytearray | memoryview) -> str:
    return f"<binary {len(value)} bytes>"


# A validation error echoes the input it rejected; these keep a binary or non-finite input from
# breaking the JSON answer (FastAPI's own handler answers 500 for them).
_VALIDATION_ENCODERS = {
    bytes: _binary_input,
    bytearray: _binary_input,
    memoryview: _binary_input,
    str: lambda value: value.encode("utf-8", "replace").decode("utf-8"),
    float: lambda value: value if math.isfinite(value) else str(value),
    BaseException: str,
}


async def _not_found(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return JSONResponse(
            {"detail": f"Path {request.url.path} not found"},
            404,
            {**(exc.headers or {}), **NOT_BILLED},
        )
    return JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)


async def _invalid_input(request: Request, exc: RequestValidationError) -> Response:
    detail = jsonable_encoder(exc.errors(), custom_encoder=_VALIDATION_ENCODERS)
    return JSONResponse({"detail": detail}, 422, NOT_BILLED)


def install_error_handlers(api: FastAPI) -> None:
    """fal's answers for an unknown path (``Path /x not found``) and for invalid input (FastAPI's
    422 body), both billed zero units."""
    api.add_exception_handler(StarletteHTTPException, _not_found)
    api.add_exception_handler(RequestValidationError, _invalid_input)
