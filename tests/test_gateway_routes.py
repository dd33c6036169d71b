"""The gateway's routes in process (``tests/in_process.py``): sync calls, the queue protocol,
``/runners``, ``/health``, ``/metrics``, and its 404/413/422/429 answers, over the real
gateway objects with runners that are ASGI apps in this process. The same routes against real
processes: test_fleet.py, test_body_limit.py, test_fleet_scaling.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.responses import StreamingResponse
from in_process import gateway_client, wait_for
from pydantic import BaseModel, Field
from starlette.testclient import TestClient

import minifal as fal
from minifal.fleet.gateway import Gateway
from minifal.fleet.scaler import ScalingSettings

pytestmark = pytest.mark.unit

HOLD_TIMEOUT_S = 10.0


class EchoInput(BaseModel):
    text: str = Field(max_length=100)


class EchoOutput(BaseModel):
    text: str
    request_id: str
    endpoint: str


class CountInput(BaseModel):
    count: int = Field(default=3, ge=0, le=10)


class GatewayTestApp(fal.App):
    """``/`` echoes, ``/hold`` keeps its runner busy until the test releases it, ``/stream`` is
    SSE, ``/refuse`` is the app's own 4xx."""

    def setup(self) -> None:
        self.release = threading.Event()

    @fal.endpoint("/")
    def echo(self, input: EchoInput) -> EchoOutput:
        request = self.current_request
        return EchoOutput(text=input.text, request_id=request.request_id, endpoint=request.endpoint)

    @fal.endpoint("/hold")
    def hold(self, input: EchoInput) -> EchoOutput:
        released = self.release.wait(HOLD_TIMEOUT_S)
        return EchoOutput(text=f"released={released}", request_id="", endpoint="/hold")

    @fal.endpoint("/stream")
    def stream(self, input: CountInput) -> StreamingResponse:
        events = (f"data: {json.dumps({'index': index})}\n\n" for index in range(input.count))
        return StreamingResponse(events, media_type="text/event-stream")

    @fal.endpoint("/refuse")
    def refuse(self, input: CountInput) -> EchoOutput:
        raise fal.exceptions.AppException("not today", status_code=409)


@pytest.fixture
def app() -> Iterator[GatewayTestApp]:
    app = GatewayTestApp()
    app.setup()  # the in-process runners run no lifespan
    yield app
    app.release.set()  # a held request ends with the test


@pytest.fixture
def gateway(app: GatewayTestApp, tmp_path: Path) -> Iterator[tuple[TestClient, Gateway]]:
    with gateway_client(app, tmp_path) as made:
        yield made


def path_of(url: str) -> str:
    return url.removeprefix("http://testserver")


def status_of(client: TestClient, submitted: dict[str, Any]) -> str:
    return client.get(path_of(submitted["status_url"])).json()["status"]


# -- sync calls ------------------------------------------------------------------------------------


def test_a_sync_call_gets_the_runners_answer_with_the_request_id(
    gateway: tuple[TestClient, Gateway],
) -> None:
    client, _ = gateway
    response = client.post("/", json={"text": "hi"}, headers={"x-fal-request-id": "ignored"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["text"] == "hi" and answer["endpoint"] == "/"
    assert response.headers["x-fal-request-id"] == answer["request_id"]
    assert answer["request_id"] != "ignored"  # the gateway names the request


def test_fals_app_path_form_reaches_the_same_endpoint(gateway: tuple[TestClient, Gateway]) -> None:
    client, gateway_ = gateway
    name = gateway_.manifest.app_name
    assert client.post(f"/someone/{name}/", json={"text": "a"}).json()["text"] == "a"
    assert client.post(f"/someone/{name}/stream", json={"count": 0}).status_code == 200


def test_the_runners_own_errors_pass_through(gateway: tuple[TestClient, Gateway]) -> None:
    client, _ = gateway
    invalid = client.post("/", json={"text": 7})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "text"]
    refused = client.post("/refuse", json={})
    assert (refused.status_code, refused.json()) == (409, {"detail": "not today"})


def test_an_unknown_path_is_404_without_reaching_a_runner(
    gateway: tuple[TestClient, Gateway],
) -> None:
    client, gateway_ = gateway
    response = client.post("/nope", json={})
    assert (response.status_code, response.json()) == (404, {"detail": "Path /nope not found"})
    assert gateway_.runner_client.sent == []  # type: ignore[attr-defined]


def test_sse_passes_through(gateway: tuple[TestClient, Gateway]) -> None:
    client, _ = gateway
    response = client.post("/stream", json={"count": 3})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line]
    assert events == [{"index": 0}, {"index": 1}, {"index": 2}]


def test_a_body_over_the_limit_is_413_at_both_doors(app: GatewayTestApp, tmp_path: Path) -> None:
    with gateway_client(app, tmp_path, max_body_bytes=1024) as (client, gateway_):
        body = json.dumps({"text": "x" * 2000})
        for path in ("/", "/queue/"):
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 413, path
        assert client.post("/", json={"text": "small"}).status_code == 200
        assert len(gateway_.runner_client.sent) == 1  # type: ignore[attr-defined]


def test_a_key_is_needed_when_the_gateway_has_one(app: GatewayTestApp, tmp_path: Path) -> None:
    with gateway_client(app, tmp_path, auth_key="s3cret") as (client, _):
        refused = client.post("/", json={"text": "x"})
        assert refused.status_code == 401
        answer = client.post("/", json={"text": "x"}, headers={"authorization": "Key s3cret"})
        assert answer.status_code == 200


# -- the queue -------------------------------------------------------------------------------------


def test_a_queue_request_round_trip(gateway: tuple[TestClient, Gateway]) -> None:
    client, _ = gateway
    submit = client.post("/queue/", json={"text": "queued"})
    assert submit.status_code == 200
    submitted = submit.json()
    assert submitted["status"] == "IN_QUEUE"
    assert submit.headers["x-fal-request-id"] == submitted["request_id"]
    wait_for(lambda: status_of(client, submitted) == "COMPLETED", "the queued request")
    result = client.get(path_of(submitted["response_url"]))
    assert result.status_code == 200
    assert result.json()["text"] == "queued"
    assert result.json()["request_id"] == submitted["request_id"]
    cancel = client.put(path_of(submitted["cancel_url"]))
    assert (cancel.status_code, cancel.json()) == (400, {"status": "ALREADY_COMPLETED"})


def test_a_request_at_a_fleet_scaled_to_zero_wakes_the_scaler_at_once(
    app: GatewayTestApp, tmp_path: Path
) -> None:
    """The first request with no runner tells the scaler (and the shared GPU pool's listener)
    when it is queued, rather than at the scaler's next tick; a runner starts and answers it."""
    scaling = ScalingSettings(min_concurrency=0, max_concurrency=1)
    with gateway_client(app, tmp_path, runners=0, scaling=scaling) as (client, gateway):
        told: list[int] = []
        gateway.demand_listeners.append(lambda: told.append(len(gateway.scheduler.queue)))
        submitted = client.post("/queue/", json={"text": "from zero"}).json()
        assert told == [1]
        wait_for(lambda: status_of(client, submitted) == "COMPLETED", "the request from zero")
        assert client.get(path_of(submitted["response_url"])).json()["text"] == "from zero"


def test_a_busy_runner_queues_cancels_and_refuses_past_max_queue(
    app: GatewayTestApp, tmp_path: Path
) -> None:
    with gateway_client(app, tmp_path, max_queue=1) as (client, _):
        held = client.post("/queue/hold", json={"text": "a"}).json()
        wait_for(lambda: status_of(client, held) == "IN_PROGRESS", "the held request to start")
        early = client.get(path_of(held["response_url"]))
        assert (early.status_code, early.json()) == (
            400,
            {"detail": "Request is still in progress"},
        )

        waiting = client.post("/queue/", json={"text": "b"}).json()
        status = client.get(path_of(waiting["status_url"])).json()
        assert status == {"status": "IN_QUEUE", "queue_position": 0}
        full = client.post("/queue/", json={"text": "c"})
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        assert client.post("/", json={"text": "sync"}).status_code == 429  # sync shares the line

        cancel = client.put(path_of(waiting["cancel_url"]))
        assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        assert client.get(path_of(waiting["response_url"])).status_code == 499

        app.release.set()
        wait_for(lambda: status_of(client, held) == "COMPLETED", "the held request to end")
        assert client.get(path_of(held["response_url"])).json()["text"] == "released=True"


def test_bad_queue_headers_and_unknown_requests(gateway: tuple[TestClient, Gateway]) -> None:
    client, _ = gateway
    priority = client.post("/queue/", json={"text": "x"}, headers={"x-fal-queue-priority": "now"})
    assert priority.status_code == 422 and "X-Fal-Queue-Priority" in priority.json()["detail"]
    timeout = client.post("/queue/", json={"text": "x"}, headers={"x-fal-request-timeout": "soon"})
    assert timeout.status_code == 422 and "X-Fal-Request-Timeout" in timeout.json()["detail"]
    unknown = "/queue/local/app/requests/no-such-id"
    for response in (
        client.get(unknown),
        client.get(unknown + "/status"),
        client.put(unknown + "/cancel"),
    ):
        assert (response.status_code, response.json()) == (404, {"detail": "Request not found"})


# -- observability ---------------------------------------------------------------------------------


def test_health_and_the_runners_table(app: GatewayTestApp, tmp_path: Path) -> None:
    with gateway_client(app, tmp_path, runners=2) as (client, gateway_):
        health = client.get("/health").json()
        assert health == {
            "status": "ok",
            "app": gateway_.manifest.app_name,
            "runners_ready": 2,
            "runners": 2,
            "queue_size": 0,
        }
        table = client.get("/runners").json()
        assert table["run_id"] == "in-process"
        rows = table["runners"]
        assert sorted(row["runner_id"] for row in rows) == ["runner-0", "runner-1"]
        assert {row["state"] for row in rows} == {"IDLE"}
        assert all(row["in_flight_requests"] == 0 for row in rows)


def test_metrics_count_what_the_gateway_answered(gateway: tuple[TestClient, Gateway]) -> None:
    client, _ = gateway
    client.post("/", json={"text": "one"})
    client.post("/", json={"text": 1})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "fal_app_requests_received_total 2.0" in lines
    assert 'fal_app_requests_completed_total{status="200"} 1.0' in lines
    assert 'fal_app_requests_completed_total{status="422"} 1.0' in lines
