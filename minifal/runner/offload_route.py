"""The runner's half of a suspension: ``POST /_minifal/offload`` before the gateway's driver
checkpoint (and ``POST /_minifal/release`` right before it: CUDA graphs dropped), ``POST
/_minifal/restore`` after its restore (``runner_contract``).

The work is ``minifal.offload.suspension``'s (blocking GPU copies and driver calls, run in a
worker thread). A failure answers 500 with its reason; the gateway then checkpoints the runner
as it is (offload, release) or replaces it (restore).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from minifal.offload import suspension
from minifal.runner_contract import OFFLOAD_PATH, RELEASE_PATH, RESTORE_PATH

logger = logging.getLogger("minifal.runner")


async def _step(run: Callable[[], dict[str, Any]], what: str) -> JSONResponse:
    """Run one step of a suspension off the event loop: its record, or a 500 that says why."""
    try:
        done = await run_in_threadpool(run)
    except Exception as error:
        logger.exception("%s failed", what)
        return JSONResponse({"detail": f"{type(error).__name__}: {error}"}, 500)
    return JSONResponse(done)


async def offload() -> JSONResponse:
    arenas = suspension.PROCESS_ARENAS
    return await _step(
        lambda: arenas.prepare_for_checkpoint().as_json(), "offload before a checkpoint"
    )


async def release() -> JSONResponse:
    arenas = suspension.PROCESS_ARENAS
    return await _step(
        lambda: arenas.release_for_checkpoint().as_json(), "release before a checkpoint"
    )


async def restore() -> JSONResponse:
    arenas = suspension.PROCESS_ARENAS
    return await _step(arenas.restore_after_checkpoint, "restore after a checkpoint")


def install_offload_routes(api: FastAPI) -> None:
    api.add_api_route(OFFLOAD_PATH, offload, methods=["POST"], include_in_schema=False)
    api.add_api_route(RELEASE_PATH, release, methods=["POST"], include_in_schema=False)
    api.add_api_route(RESTORE_PATH, restore, methods=["POST"], include_in_schema=False)
