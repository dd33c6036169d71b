"""A runner's routes in process (unit tier): ``tests/apps/echo_app.py`` served by its own ASGI
app (``minifal.runner.asgi``) through Starlette's ``TestClient``, lifespan included (its async
``setup()`` runs). Endpoints, validation, ``/health``, every error class to its status code, the
request context, SSE, websockets and realtime frames. The same app behind a real ``minifal
serve`` process, with its log: test_serve.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgpack
import pytest
from conftest import APPS_DIR
from starlette.testclient import TestClient

from minifal.compat.fal_alias import install_fal_alias
from minifal.runner.app_loader import load_app_class
from minifal.runner.asgi import build_asgi_app

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("echo-data")
    install_fal_alias()  # the app says ``import fal``, as a runner process lets it
    app_class = load_app_class(str(APPS_DIR / "echo_app.py"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINIFAL_DATA_DIR", str(data_dir))  # where the app logs its hooks
        with TestClient(build_asgi_app(app_class())) as served:
            yield served
        assert (data_dir / "lifecycle.log").read_text().split() == ["setup", "teardown"]


def post_error(client: TestClient, kind: str, **fields: object) -> tuple[int, object]:
    response = client.post("/error", json={"kind": kind, **fields})
    return response.status_code, response.json()


def test_an_endpoint_answers_with_what_setup_made(client: TestClient) -> None:
    response = client.post("/", json={"prompt": "hi", "repeat": 2})
    assert response.status_code == 200
    assert response.json() == {"text": "hi hi", "greeting": "hello from setup"}


def test_health_is_the_apps_override(client: TestClient) -> None:
    response = client.get("/health")
    assert (response.status_code, response.json()) == (
        200,
        {"version": "echo-1", "greeting": "hello from setup"},
    )


def test_invalid_input_is_422_naming_the_field_and_is_not_billed(client: TestClient) -> None:
    response = client.post("/", json={"prompt": "x", "repeat": 99})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "repeat"] and error["type"] == "less_than_equal"
    assert response.headers["x-fal-billable-units"] == "0"
    not_json = client.post("/", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422


def test_unknown_paths_and_methods(client: TestClient) -> None:
    response = client.post("/nope", json={})
    assert (response.status_code, response.json()) == (404, {"detail": "Path /nope not found"})
    assert client.get("/").status_code == 405  # endpoints are POST only


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        (
            "field",
            422,
            {
                "detail": [
                    {"loc": ["body", "prompt"], "msg": "must not be empty", "type": "value_error"}
                ]
            },
        ),
        (
            "field_custom",
            400,
            {"detail": [{"loc": ["body", "count"], "msg": "too many", "type": "too_many"}]},
        ),
        ("app", 429, {"detail": "quota exceeded"}),
        ("cancelled", 499, {"detail": "stopped by the caller"}),
        ("cuda", 503, {"detail": "GPU error"}),
        ("cuda_oom", 503, {"detail": "CUDA error: out of memory"}),
        ("torch_oom", 503, {"detail": "CUDA error: out of memory"}),
        ("gpu", 503, {"detail": "the GPU fell off the bus"}),
        ("plain", 500, {"detail": "Internal Server Error"}),  # no secret in the answer
    ],
)
def test_each_error_class_has_its_status(
    client: TestClient, kind: str, status: int, body: object
) -> None:
    assert post_error(client, kind) == (status, body)


def test_the_apps_billable_units_and_bad_outputs(client: TestClient) -> None:
    response = client.post("/error", json={"kind": "field", "billable_units": 3})
    assert response.headers["x-fal-billable-units"] == "3"
    assert post_error(client, "field", billable_units="many") == (
        500,
        {"detail": "Internal Server Error"},
    )
    async_error = client.post("/error/async", json={"kind": "plain"})
    assert async_error.status_code == 500 and "5678" not in async_error.text
    bad_output = client.post("/bad-output")
    assert (bad_output.status_code, bad_output.json()) == (500, {"detail": "Internal Server Error"})


def test_the_request_context_reaches_the_app(client: TestClient) -> None:
    headers = {"x-fal-request-id": "req-1", "x-fal-endpoint": "/via-gateway", "x-custom": "c"}
    response = client.post("/request/async", json={}, headers=headers)
    assert response.json() == {
        "request_id": "req-1",
        "endpoint": "/via-gateway",
        "custom_header": "c",
    }
    assert response.headers["x-fal-request-id"] == "req-1"
    generated = client.post("/request", json={})
    assert generated.json()["request_id"] == generated.headers["x-fal-request-id"] != ""


def test_sse_and_openapi(client: TestClient) -> None:
    response = client.post("/stream", json={"count": 2})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line]
    assert events == [{"index": 0, "text": "event 0"}, {"index": 1, "text": "event 1"}]
    paths = client.get("/openapi.json").json()["paths"]
    assert list(paths["/"]) == ["post"] and "/health" not in paths


def test_a_raw_websocket_and_realtime_frames(client: TestClient) -> None:
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text("one")
        assert websocket.receive_text() == "echo: one"
    with client.websocket_connect("/realtime") as websocket:
        websocket.send_bytes(msgpack.packb({"prompt": "hello"}))
        assert msgpack.unpackb(websocket.receive_bytes()) == {"text": "HELLO", "index": 0}
        websocket.send_bytes(msgpack.packb({"wrong": "shape"}))
        frame = json.loads(websocket.receive_text())
        assert frame["error"] == "VALIDATION_ERROR" and frame["reason"][0]["loc"] == ["prompt"]
        websocket.send_bytes(msgpack.packb({"prompt": "crash"}))
        frame = json.loads(websocket.receive_text())
        assert frame["error"] == "INTERNAL_ERROR" and "secret" not in json.dumps(frame)
        websocket.send_bytes(msgpack.packb({"prompt": "still here"}))
        assert msgpack.unpackb(websocket.receive_bytes()) == {"text": "STILL HERE", "index": 0}


def test_stored_files_stay_inside_the_data_dir(client: TestClient) -> None:
    response = client.get("/files/..%2F..%2Fetc%2Fpasswd")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("Path /files/")
