"""fal's ``?fal_webhook=URL``: POST the result of a queued request to the caller's URL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from minifal.fleet.jobs import Job
from minifal.fleet.webhook_policy import WebhookPolicy, WebhookRefused, pinned_request

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


async def deliver_webhook(client: httpx.AsyncClient, job: Job, attempts: int = ATTEMPTS) -> bool:
    """A few bounded attempts with back-off; a receiver that never answers 2xx is logged.

    Each attempt checks the URL against the job's policy again and connects to an address it
    checked; redirects are not followed (a 3xx is a failed attempt)."""
    assert job.webhook_url is not None
    body = webhook_payload(job)
    policy = job.webhook_policy or WebhookPolicy()
    for attempt in range(1, attempts + 1):
        try:
            checked = await asyncio.to_thread(policy.check, job.webhook_url)  # resolves
        except WebhookRefused as exc:
            logger.warning("webhook for %s not sent: %s", job.id, exc)
            return False
        url, headers, extensions = pinned_request(checked)
        try:
            response = await client.post(
                url,
                json=body,
                headers=headers,
                extensions=extensions,
                timeout=TIMEOUT_SECONDS,
                follow_redirects=False,
            )
            if response.status_code < 300:
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        logger.warning("webhook for %s, attempt %d: %s", job.id, attempt, problem)
        if attempt < attempts:
            await asyncio.sleep(0.5 * 2**attempt)
    return False
