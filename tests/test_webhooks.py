"""The body ``?fal_webhook=`` receivers get."""

from __future__ import annotations

import asyncio
import json

import pytest

from minifal.fleet.jobs import Job
from minifal.fleet.webhooks import webhook_payload

# -- webhook_payload -------------------------------------------------------------------------------


def completed_job(status: int, body: bytes) -> Job:
    async def make() -> Job:
        job = Job("/", b"{}", {})
        job.complete(status, body)
        return job

    return asyncio.run(make())


def test_webhook_payload_ok() -> None:
    job = completed_job(200, json.dumps({"images": [1, 2]}).encode())
    assert webhook_payload(job) == {
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": "OK",
        "payload": {"images": [1, 2]},
    }


def test_webhook_payload_error_keeps_the_detail() -> None:
    detail = [{"loc": ["body", "prompt"], "msg": "required", "type": "missing"}]
    job = completed_job(422, json.dumps({"detail": detail}).encode())
    body = webhook_payload(job)
    assert body["status"] == "ERROR"
    assert body["request_id"] == job.id
    assert body["payload"] == {"detail": detail}
    assert body["error"] == "Invalid status code: 422"
    assert body["payload_error"] == detail


@pytest.mark.parametrize("raw", [b"", b"not json"])
def test_webhook_payload_of_a_body_that_is_not_json(raw: bytes) -> None:
    body = webhook_payload(completed_job(500, raw))
    assert body["status"] == "ERROR" and body["payload"] is None
    assert body["payload_error"] is None
