"""The bodies of fal's queue protocol: what a submit answers, what a status says.

``GET .../requests/ID/status`` answers 202 with ``IN_QUEUE`` (and the place in line) or
``IN_PROGRESS``, then 200 with ``COMPLETED``, its metrics and, for a failed request, fal's
``error`` and ``error_type``.
"""

from __future__ import annotations

import json
from typing import Any

from minifal.fleet.jobs import Job


def queue_urls(base_url: str, owner: str, app_name: str, job: Job) -> dict[str, str]:
    """Where the caller finds the request: ``base_url`` is the gateway's, as the caller used it."""
    base = f"{base_url}/queue/{owner}/{app_name}/requests/{job.id}"
    return {
        "request_id": job.id,
        "response_url": base,
        "status_url": f"{base}/status",
        "cancel_url": f"{base}/cancel",
    }


def status_body(
    job: Job, queue_position: int | None, logs: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """``logs``: fal's log entries (``?logs=1``; ``fleet/request_logs.py``), else None."""
    if job.status == "IN_QUEUE":
        return {"status": "IN_QUEUE", "queue_position": queue_position or 0}
    if job.status == "IN_PROGRESS":
        return {"status": "IN_PROGRESS", "logs": logs}
    body: dict[str, Any] = {
        "status": "COMPLETED",
        "logs": logs,
        "metrics": {"inference_time": job.inference_time},
    }
    if not job.succeeded:
        detail = job.error_detail
        body["error"] = detail if isinstance(detail, str) else json.dumps(detail)
        body["error_type"] = job.response_headers.get("x-fal-error-type")
    return body


def status_code(job: Job) -> int:
    return 200 if job.status == "COMPLETED" else 202
