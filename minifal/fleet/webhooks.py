"""fal's ``?fal_webhook=URL``: POST the result of a queued request to the caller's URL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from minifal.fleet.jobs import Job

logger = logging.getLogger("minifal.fleet")

ATTEMPTS = 3
TIMEOUT_SECONDS = 15.0


def webhook_payload(job: Job) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": "OK" if job.succeeded else "ERROR",
        "payload": job.response_json,
    }
    if not job.succeeded:
        body["error"] = f"Invalid status code: {job.response_status}"
        body["payload_error"] = job.error_detail
    return body


async def deliver_webhook(client: httpx.AsyncClient, job: Job) -> bool:
    """A few bounded attempts with back-off; a receiver that never answers 2xx is logged."""
    assert job.webhook_url is not None
    body = webhook_payload(job)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = await client.post(job.webhook_url, json=body, timeout=TIMEOUT_SECONDS)
            if response.status_code < 300:
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        logger.warning("webhook for %s, attempt %d: %s", job.id, attempt, problem)
        await asyncio.sleep(0.5 * 2**attempt)
    return False
