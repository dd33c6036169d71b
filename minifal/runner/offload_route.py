"""The runner's half of a suspension: ``POST /_minifal/offload`` before the gateway's driver
checkpoint, ``POST /_minifal/restore`` after its restore (``runner_contract``).

The work is ``minifal.offload.suspension``'s (blocking GPU copies and driver calls, run in a
worker thread). A failure answers 500 with its reason; the gateway then checkpoints everything
(offload) or replaces the runner (restore).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from minifal.offload import suspension
from minifal.runner_contract import OFFLOAD_PATH, RESTORE_PATH

logger = logging.getLogger("minifal.runner")


async def offload() -> JSONResponse:
    try:
        offloaded = await run_in_threadpool(suspension.PROCESS_ARENAS.prepare_for_checkpoint)
    except Exception as error:
        logger.exception("offload before a checkpoint failed")
        return JSONResponse({"detail": f"{type(error).__name__}: {error}"}, 500)
    return JSONResponse(offloaded.as_json())


async def restore() -> JSONResponse:
    try:
        restored = await run_in_threadpool(suspension.PROCESS_ARENAS.restore_after_checkpoint)
    except Exception as error:
        logger.exception("restore after a checkpoint failed")
        return JSONResponse({"detail": f"{type(error).__name__}: {error}"}, 500)
    return JSONResponse(restored)


def install_offload_routes(api: FastAPI) -> None:
    api.add_api_route(OFFLOAD_PATH, offload, methods=["POST"], include_in_schema=False)
    api.add_api_route(RESTORE_PATH, restore, methods=["POST"], include_in_schema=False)
