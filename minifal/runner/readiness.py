"""When a runner is ready: the route the fleet polls (``runner_contract.READY_PATH``).

The port opens once ``setup()`` has run. An App without a ``HealthCheck`` is then ready. An App
that declares one (``@fal.endpoint("/ready", health_check=fal.HealthCheck(...))``) is ready when
that endpoint answers 2xx, probed as fal's platform probes it (its ``method``, POST by default,
with an empty JSON body for a POST), through the runner's own ASGI app in this process. The
App's ``GET /health`` (its ``health()``) is then an ordinary route: a broken one does not keep
such a runner from serving, as on fal.
"""

from __future__ import annotations

import asyncio

import httpx
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from minifal.endpoints import HealthCheck
from minifal.runner_contract import ENDPOINT_HEADER

PROBE_BASE_URL = "http://runner.local"
"""Any host: the probe never leaves the process."""


async def probe(api: ASGIApp, path: str, check: HealthCheck) -> tuple[int, str]:
    """The status of one in-process call of the health-check endpoint and a short reason
    (a timeout, after the check's ``timeout_seconds``, is 504)."""
    transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
    method = check.probe_method
    async with httpx.AsyncClient(transport=transport, base_url=PROBE_BASE_URL) as client:
        try:
            async with asyncio.timeout(check.timeout_seconds or None):
                response = await client.request(
                    method,
                    path,
                    json={} if method == "POST" else None,
                    headers={ENDPOINT_HEADER: path},
                )
        except TimeoutError:
            return 504, f"{method} {path} took over {check.timeout_seconds} s"
    return response.status_code, f"{method} {path} answered {response.status_code}"


def readiness_answer(status: int, reason: str) -> JSONResponse:
    """200 when the health check passed, else 503 saying why."""
    if 200 <= status < 300:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reason": reason}, 503)
