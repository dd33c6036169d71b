"""Real HTTP and websockets against real ``minifal serve`` subprocesses (FAL_API.md §1, §2, §4).

Read-only tests share one server per app (module-scoped); tests that stop a server start their own.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgpack
import pytest
from conftest import APPS_DIR, ServedApp, run_minifal, start_served_app
from PIL import Image as PILImage
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from minifal.runner_contract import EXIT_SETUP_FAILED
from minifal.startup.events import read_events

pytestmark = pytest.mark.process

ECHO_APP = APPS_DIR / "echo_app.py"
IMAGE_APP = APPS_DIR / "image_app.py"


@pytest.fixture(scope="module")
def client(echo_server: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=echo_server.base_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with start_served_app(str(IMAGE_APP), tmp_path_factory.mktemp("image")) as served:
        yield served


@pytest.fixture(scope="module")
def image_client(image_server: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=image_server.base_url, timeout=30) as http:
        yield http


# -- the pydantic endpoint, validation, health -------------------------------------------------


def test_pydantic_endpoint(client: httpx.Client) -> None:
    response = client.post("/", json={"prompt": "hi", "repeat": 3})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"text": "hi hi hi", "greeting": "hello from setup"}


def test_pydantic_endpoint_uses_defaults(client: httpx.Client) -> None:
    assert client.post("/", json={"prompt": "once"}).json()["text"] == "once"


def test_missing_field_is_422_with_loc(client: httpx.Client) -> None:
    response = client.post("/", json={"repeat": 2})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [error["loc"] for error in errors] == [["body", "prompt"]]
    assert errors[0]["type"] == "missing"


def test_constraint_violation_is_422_with_loc(client: httpx.Client) -> None:
    response = client.post("/", json={"prompt": "x", "repeat": 99})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "repeat"]
    assert error["type"] == "less_than_equal"
    assert "msg" in error


def test_body_that_is_not_json_is_422(client: httpx.Client) -> None:
    response = client.post("/", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_health_uses_the_override_and_async_setup_ran(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"version": "echo-1", "greeting": "hello from setup"}


def test_unknown_path_is_404_with_fal_body(client: httpx.Client) -> None:
    response = client.post("/nope", json={}, headers={"x-fal-request-id": "lost-1"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Path /nope not found"}
    assert response.headers["x-fal-request-id"] == "lost-1"
    assert response.headers["x-fal-billable-units"] == "0"  # fal bills no unknown path
    response = client.get("/nope/deeper")
    assert response.status_code == 404
    assert response.json() == {"detail": "Path /nope/deeper not found"}
    assert response.headers["x-fal-billable-units"] == "0"


def test_invalid_input_is_not_billed(client: httpx.Client) -> None:
    response = client.post("/", json={"repeat": 2})
    assert response.status_code == 422
    assert response.headers["x-fal-billable-units"] == "0"
    # A valid request reports no units of its own: the fleet bills it by inference time.
    assert "x-fal-billable-units" not in client.post("/", json={"prompt": "x"}).headers


def test_binary_input_in_a_validation_error_is_still_json(client: httpx.Client) -> None:
    response = client.post("/", content=b"\xff\xfe\x00", headers={"content-type": "text/plain"})
    assert response.status_code == 422
    assert response.headers["x-fal-billable-units"] == "0"
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_endpoint_without_input(client: httpx.Client) -> None:
    response = client.post("/ping")
    assert response.status_code == 200
    assert response.json() == {"pong": True}


def test_endpoints_are_post_only(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 405


# -- errors: FAL_API.md §2 ---------------------------------------------------------------------


def test_field_exception(client: httpx.Client) -> None:
    response = client.post("/error", json={"kind": "field"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", "prompt"], "msg": "must not be empty", "type": "value_error"}]
    }
    # billable_units=0 (the default): no header, as in fal (the platform's default applies).
    assert "x-fal-billable-units" not in response.headers


@pytest.mark.parametrize(("units", "header"), [(3, "3"), (1.5, "1.50000000"), ("2", "2.00000000")])
def test_field_exception_reports_its_billable_units(
    client: httpx.Client, units: int | float | str, header: str
) -> None:
    response = client.post("/error", json={"kind": "field", "billable_units": units})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert response.headers["x-fal-billable-units"] == header


def test_field_exception_with_billable_units_that_are_no_number_is_500(
    client: httpx.Client, echo_server: ServedApp
) -> None:
    response = client.post(
        "/error",
        json={"kind": "field", "billable_units": "many"},
        headers={"x-fal-request-id": "units-1"},
    )
    assert response.status_code == 500
    assert response.content == b'{"detail":"Internal Server Error"}'
    assert "x-fal-billable-units" not in response.headers
    assert "request units-1: FieldException.billable_units='many' is not a number" in (
        echo_server.log()
    )


def test_field_exception_with_its_own_status_and_type(client: httpx.Client) -> None:
    response = client.post("/error", json={"kind": "field_custom"})
    assert response.status_code == 400
    assert response.json() == {
        "detail": [{"loc": ["body", "count"], "msg": "too many", "type": "too_many"}]
    }


def test_app_exception_with_custom_status(client: httpx.Client) -> None:
    response = client.post("/error", json={"kind": "app"})
    assert response.status_code == 429
    assert response.json() == {"detail": "quota exceeded"}


def test_request_cancelled_is_499(client: httpx.Client) -> None:
    response = client.post("/error", json={"kind": "cancelled"})
    assert response.status_code == 499
    assert response.json() == {"detail": "stopped by the caller"}


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        ("cuda", "GPU error"),
        ("cuda_oom", "CUDA error: out of memory"),
        ("torch_oom", "CUDA error: out of memory"),
        ("gpu", "the GPU fell off the bus"),
    ],
)
def test_gpu_errors_are_503_with_fal_body(
    client: httpx.Client, echo_server: ServedApp, kind: str, detail: str
) -> None:
    request_id = f"gpu-{kind}"
    response = client.post("/error", json={"kind": kind}, headers={"x-fal-request-id": request_id})
    assert response.status_code == 503
    assert response.json() == {"detail": detail}
    assert response.headers["x-fal-request-id"] == request_id
    # The traceback (with the original error) is in the runner's log, never in the answer.
    log = echo_server.log()
    logged = log[log.index(f"request {request_id} failed with a GPU error") :]
    assert "Traceback (most recent call last)" in logged
    if kind == "cuda":
        assert "illegal memory access" in logged


@pytest.mark.parametrize(
    ("path", "secret"),
    [("/error", "secret internal detail 1234"), ("/error/async", "secret async detail 5678")],
)
def test_other_errors_are_500_without_a_leak(
    client: httpx.Client, echo_server: ServedApp, path: str, secret: str
) -> None:
    response = client.post(path, json={"kind": "plain"}, headers={"x-fal-request-id": "err-1"})
    assert response.status_code == 500
    assert response.content == b'{"detail":"Internal Server Error"}'
    assert response.headers["x-fal-request-id"] == "err-1"
    # The traceback belongs in the server's log, not in the answer.
    log = echo_server.log()
    assert "Traceback (most recent call last)" in log
    assert secret in log


def test_invalid_output_is_500_in_fal_shape(client: httpx.Client, echo_server: ServedApp) -> None:
    response = client.post("/bad-output", headers={"x-fal-request-id": "bad-out-1"})
    assert response.status_code == 500
    assert response.content == b'{"detail":"Internal Server Error"}'
    assert response.headers["x-fal-request-id"] == "bad-out-1"
    assert "/bad-output returned an invalid output" in echo_server.log()


# -- request context ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/request", "/request/async"])
def test_request_id_and_endpoint_reach_the_app(client: httpx.Client, path: str) -> None:
    response = client.post(
        path, json={}, headers={"x-fal-request-id": "req-123", "x-custom": "hello"}
    )
    assert response.status_code == 200
    assert response.json() == {"request_id": "req-123", "endpoint": path, "custom_header": "hello"}
    assert response.headers["x-fal-request-id"] == "req-123"


def test_x_fal_endpoint_header_reaches_the_app(client: httpx.Client) -> None:
    response = client.post("/request", json={}, headers={"x-fal-endpoint": "/via-gateway"})
    assert response.json()["endpoint"] == "/via-gateway"


def test_request_id_is_generated_when_absent(client: httpx.Client) -> None:
    first = client.post("/request", json={})
    second = client.post("/request", json={})
    first_id = first.json()["request_id"]
    assert first_id
    assert first_id != second.json()["request_id"]
    assert first.headers["x-fal-request-id"] == first_id


# -- OpenAPI and docs --------------------------------------------------------------------------


def test_openapi_lists_endpoints_with_their_schemas(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "echo-app"
    paths = spec["paths"]
    for path in ("/", "/error", "/request", "/stream"):
        assert list(paths[path]) == ["post"], path
    assert "/health" not in paths
    schemas = spec["components"]["schemas"]
    root = paths["/"]["post"]
    assert root["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Input"
    }
    assert root["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Output"
    }
    assert schemas["Input"]["required"] == ["prompt"]
    assert schemas["Input"]["properties"]["prompt"]["description"] == "The text to echo."
    assert schemas["Input"]["properties"]["prompt"]["examples"] == ["a cat"]
    assert schemas["Input"]["properties"]["repeat"]["maximum"] == 10
    assert set(schemas["Output"]["properties"]) == {"text", "greeting"}
    # No trace of the runner's own plumbing in the public schema.
    assert "minifal_request__" not in response.text


def test_docs_page(client: httpx.Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text


# -- streaming ---------------------------------------------------------------------------------


def _sse_events(lines: Iterator[str]) -> list[dict]:
    events, data = [], []
    for line in lines:
        if line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif line == "" and data:
            events.append(json.loads("\n".join(data)))
            data = []
    assert not data, "the stream ended inside an event"
    return events


def test_sse_stream(client: httpx.Client) -> None:
    with client.stream("POST", "/stream", json={"count": 4}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response.iter_lines())
    assert events == [{"index": i, "text": f"event {i}"} for i in range(4)]


def test_sse_stream_validates_its_input(client: httpx.Client) -> None:
    response = client.post("/stream", json={"count": -1})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "count"]


# -- websockets --------------------------------------------------------------------------------


def test_raw_websocket_echo(echo_server: ServedApp) -> None:
    with connect(echo_server.ws_base_url + "ws", open_timeout=10) as websocket:
        for text in ("one", "two", "три"):
            websocket.send(text)
            assert websocket.recv(timeout=10) == f"echo: {text}"


def _recv_msgpack(websocket) -> dict:
    message = websocket.recv(timeout=10)
    assert isinstance(message, bytes), f"expected a binary frame, got {message!r}"
    return msgpack.unpackb(message)


def _recv_error(websocket) -> dict:
    message = websocket.recv(timeout=10)
    assert isinstance(message, str), f"expected a text error frame, got {message!r}"
    frame = json.loads(message)
    assert frame["type"] == "x-fal-error"
    return frame


def test_realtime_unary(echo_server: ServedApp) -> None:
    with connect(echo_server.ws_base_url + "realtime", open_timeout=10) as websocket:
        for prompt in ("hello", "again"):
            websocket.send(msgpack.packb({"prompt": prompt}))
            assert _recv_msgpack(websocket) == {"text": prompt.upper(), "index": 0}


def test_realtime_server_streaming(echo_server: ServedApp) -> None:
    with connect(echo_server.ws_base_url + "realtime/stream", open_timeout=10) as websocket:
        websocket.send(msgpack.packb({"prompt": "tick", "count": 3}))
        outputs = [_recv_msgpack(websocket) for _ in range(3)]
        assert outputs == [{"text": "tick", "index": i} for i in range(3)]
        # The session is still usable for the next input.
        websocket.send(msgpack.packb({"prompt": "tock", "count": 1}))
        assert _recv_msgpack(websocket) == {"text": "tock", "index": 0}


def test_realtime_bad_messages_do_not_end_the_session(echo_server: ServedApp) -> None:
    with connect(echo_server.ws_base_url + "realtime", open_timeout=10) as websocket:
        websocket.send(msgpack.packb({"wrong": "shape"}))
        frame = _recv_error(websocket)
        assert frame["error"] == "VALIDATION_ERROR"
        assert frame["reason"][0]["loc"] == ["prompt"]

        websocket.send(b"\xc1 is never valid msgpack")
        assert _recv_error(websocket)["error"] == "BAD_MESSAGE"

        websocket.send(msgpack.packb({"prompt": "fail"}))
        frame = _recv_error(websocket)
        assert frame["error"] == "APP_ERROR"
        assert frame["reason"] == "cannot do that"

        websocket.send(msgpack.packb({"prompt": "still here"}))
        assert _recv_msgpack(websocket) == {"text": "STILL HERE", "index": 0}


def test_realtime_internal_error_is_a_frame_without_the_message(echo_server: ServedApp) -> None:
    with connect(echo_server.ws_base_url + "realtime", open_timeout=10) as websocket:
        websocket.send(msgpack.packb({"prompt": "crash"}))
        frame = _recv_error(websocket)
        assert frame["error"] == "INTERNAL_ERROR"
        assert "secret realtime detail" not in json.dumps(frame)
        websocket.send(msgpack.packb({"prompt": "ok"}))
        assert _recv_msgpack(websocket) == {"text": "OK", "index": 0}
    assert "secret realtime detail" in echo_server.log()


def test_realtime_async_methods(echo_server: ServedApp) -> None:
    with connect(echo_server.ws_base_url + "realtime/async", open_timeout=10) as websocket:
        websocket.send(msgpack.packb({"prompt": "abc", "count": 7}))
        assert _recv_msgpack(websocket) == {"text": "cba", "index": 7}
    with connect(echo_server.ws_base_url + "realtime/async-stream", open_timeout=10) as websocket:
        websocket.send(msgpack.packb({"prompt": "a", "count": 2}))
        assert [_recv_msgpack(websocket) for _ in range(2)] == [
            {"text": "a", "index": 0},
            {"text": "a", "index": 1},
        ]


def test_websocket_to_unknown_path_is_refused(echo_server: ServedApp) -> None:
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(echo_server.ws_base_url + "nope", open_timeout=10),
    ):
        pass
    assert refused.value.response.status_code == 403


# -- File / Image ------------------------------------------------------------------------------


def _expected_pixels(width: int, height: int) -> list[tuple[int, int, int]]:
    return [(x % 256, y % 256, (x * y) % 256) for y in range(height) for x in range(width)]


def _decoded_pixels(encoded: bytes, *, format: str = "PNG") -> list[tuple[int, ...]]:
    """Decode an image file and list its RGB pixels row by row."""
    with PILImage.open(io.BytesIO(encoded)) as decoded:
        assert decoded.format == format
        raw = decoded.convert("RGB").tobytes()
    return [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]


def test_image_output_url_serves_the_same_pixels(
    image_client: httpx.Client, image_server: ServedApp
) -> None:
    response = image_client.post("/make", json={"width": 40, "height": 30})
    assert response.status_code == 200
    image = response.json()["image"]
    assert set(image) == {"url", "content_type", "file_name", "file_size", "width", "height"}
    assert (image["width"], image["height"]) == (40, 30)
    assert image["content_type"] == "image/png"
    assert image["url"].startswith(image_server.base_url)

    fetched = httpx.get(image["url"], timeout=30)
    assert fetched.status_code == 200
    assert len(fetched.content) == image["file_size"]
    with PILImage.open(io.BytesIO(fetched.content)) as decoded:
        assert decoded.size == (40, 30)
    assert _decoded_pixels(fetched.content) == _expected_pixels(40, 30)
    # Stored under the data dir, as issue 2 asks.
    assert list((image_server.data_dir / "files").rglob(image["file_name"]))


def test_in_memory_image_is_a_data_uri(image_client: httpx.Client) -> None:
    image = image_client.post("/make", json={"width": 5, "height": 4, "in_memory": True}).json()[
        "image"
    ]
    assert image["url"].startswith("data:image/png;base64,")
    encoded = image["url"].split(",", 1)[1]
    assert _decoded_pixels(base64.b64decode(encoded)) == _expected_pixels(5, 4)
    assert (image["width"], image["height"]) == (5, 4)


def _png_data_uri(picture: PILImage.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_image_input_from_a_data_uri(image_client: httpx.Client) -> None:
    picture = PILImage.new("RGB", (6, 3), (10, 20, 30))
    picture.putpixel((0, 0), (255, 255, 255))
    response = image_client.post("/invert", json={"image": {"url": _png_data_uri(picture)}})
    assert response.status_code == 200, response.text
    image = response.json()["image"]
    assert (image["width"], image["height"]) == (6, 3)
    pixels = _decoded_pixels(httpx.get(image["url"], timeout=30).content)
    assert pixels[0] == (0, 0, 0)
    assert pixels[1:] == [(245, 235, 225)] * 17


def test_image_input_from_an_http_url_and_a_bare_string(image_client: httpx.Client) -> None:
    made = image_client.post("/make", json={"width": 8, "height": 8}).json()["image"]
    response = image_client.post("/invert", json={"image": made["url"]})
    assert response.status_code == 200, response.text
    inverted = response.json()["image"]
    pixels = _decoded_pixels(httpx.get(inverted["url"], timeout=30).content)
    assert pixels == [tuple(255 - c for c in p) for p in _expected_pixels(8, 8)]


def test_file_round_trip(image_client: httpx.Client) -> None:
    payload = bytes(range(200))
    data_uri = "data:application/octet-stream;base64," + base64.b64encode(payload).decode()
    response = image_client.post("/file", json={"file": {"url": data_uri}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == 200
    assert body["file"]["file_size"] == 200
    assert httpx.get(body["file"]["url"], timeout=30).content == payload[::-1]


def test_bad_image_url_is_422(image_client: httpx.Client) -> None:
    response = image_client.post("/invert", json={"image": {"url": "ftp://example.com/x.png"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "image"]


def test_stored_file_path_escape_is_404(image_client: httpx.Client) -> None:
    response = image_client.get("/files/..%2F..%2Fetc%2Fpasswd")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("Path /files/")


def test_image_schema_in_openapi(image_client: httpx.Client) -> None:
    schemas = image_client.get("/openapi.json").json()["components"]["schemas"]
    assert {"url", "width", "height"} <= set(schemas["Image"]["properties"])


# -- the process: startup events, SIGTERM, failures --------------------------------------------


def test_startup_events_file(client: httpx.Client, echo_server: ServedApp) -> None:
    assert client.post("/", json={"prompt": "first"}).status_code == 200
    (events_path,) = echo_server.data_dir.glob("runs/*/runner-0.jsonl")
    events = read_events(events_path)
    phases = [event["phase"] for event in events]
    for expected in ("process_start", "imports", "app_import", "setup", "ready", "first_request"):
        assert expected in phases, phases
    order = {phase: phases.index(phase) for phase in phases}
    assert order["process_start"] < order["app_import"] < order["setup"] < order["ready"]
    assert order["ready"] < order["first_request"]
    assert phases.count("first_request") == 1
    assert all(event["runner_id"] == "runner-0" for event in events)
    assert all(event["end"] >= event["start"] for event in events)
    setup = next(e for e in events if e["phase"] == "setup")["details"]
    assert "error" not in setup
    # the collector's pauses during setup(), and the imports frozen before it (collector.py)
    assert setup["gc_s"] >= 0 and setup["gc_collections"] >= setup["gc_full_collections"] >= 0
    assert setup["frozen_objects"] > 0


def _wait_for_line(path: Path, line: str, timeout: float = 30.0) -> None:
    """Poll a file the app writes until ``line`` appears (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text().splitlines():
            return
        time.sleep(0.02)
    pytest.fail(f"{line!r} never appeared in {path}")


def test_sigterm_runs_handle_exit_and_teardown_and_exits_0(serve_app) -> None:
    served = serve_app(ECHO_APP)
    assert f"data dir: {served.data_dir}" in served.log()
    with httpx.Client(base_url=served.base_url, timeout=30) as http:
        assert http.post("/", json={"prompt": "x"}).status_code == 200
    lifecycle = served.data_dir / "lifecycle.log"
    assert lifecycle.read_text().splitlines() == ["setup"]

    exit_code = served.terminate(timeout=30)

    assert exit_code == 0, served.log()
    assert lifecycle.read_text().splitlines() == ["setup", "handle_exit", "teardown"]
    (events_path,) = served.data_dir.glob("runs/*/runner-0.jsonl")
    assert "teardown" in [event["phase"] for event in read_events(events_path)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_drains_the_request_in_flight(serve_app, sig: signal.Signals) -> None:
    served = serve_app(ECHO_APP)
    lifecycle = served.data_dir / "lifecycle.log"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, served.url("/slow"), json={}, timeout=60)
        _wait_for_line(lifecycle, "slow-start")
        served.process.send_signal(sig)
        response = pending.result(timeout=30)
    assert response.status_code == 200
    assert response.json()["text"] == "released=True"
    assert served.process.wait(30) == 0, served.log()
    assert lifecycle.read_text().splitlines() == [
        "setup",
        "slow-start",
        "handle_exit",
        "slow-end",
        "teardown",
    ]
    assert "Traceback" not in served.log()


def test_no_app_in_file_exits_non_zero(tmp_path: Path) -> None:
    result = run_minifal("serve", str(APPS_DIR / "no_app.py"), "--port", "1", cwd=tmp_path)
    assert result.returncode != 0
    assert "defines no App subclass" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_exits_non_zero(tmp_path: Path) -> None:
    result = run_minifal("serve", str(tmp_path / "absent.py"), "--port", "1", cwd=tmp_path)
    assert result.returncode != 0
    assert "app file not found" in result.stderr


def test_unknown_class_name_exits_non_zero(tmp_path: Path) -> None:
    reference = f"{APPS_DIR / 'echo_app.py'}::Nope"
    result = run_minifal("serve", reference, "--port", "1", cwd=tmp_path)
    assert result.returncode != 0
    assert "has no class 'Nope'" in result.stderr


def test_non_app_class_name_exits_non_zero(tmp_path: Path) -> None:
    reference = f"{APPS_DIR / 'echo_app.py'}::Input"
    result = run_minifal("serve", reference, "--port", "1", cwd=tmp_path)
    assert result.returncode != 0
    assert "is not a fal.App subclass" in result.stderr


@pytest.mark.parametrize(
    ("app_file", "expected"),
    [
        ("bad_value_app.py", ["NegativeApp.keep_alive"]),
    ],
)
def test_bad_setting_exits_non_zero_naming_it(
    tmp_path: Path, app_file: str, expected: list[str]
) -> None:
    result = run_minifal("serve", str(APPS_DIR / app_file), "--port", "1", cwd=tmp_path)
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_several_apps_in_a_file_need_a_class_name(tmp_path: Path) -> None:
    result = run_minifal("serve", str(APPS_DIR / "two_apps.py"), "--port", "1", cwd=tmp_path)
    assert result.returncode != 0
    assert "several Apps (FirstApp, SecondApp)" in result.stderr
    assert "::ClassName" in result.stderr


def test_startup_timeout_stops_a_slow_setup(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    app = str(APPS_DIR / "slow_setup_app.py")
    result = run_minifal("serve", app, "--port", "0", "--data-dir", str(data_dir), cwd=tmp_path)
    assert result.returncode != 0
    assert "startup_timeout=2" in result.stdout + result.stderr
    (events_path,) = data_dir.glob("runs/*/runner-0.jsonl")
    assert "startup_timeout" in [event["phase"] for event in read_events(events_path)]


def test_named_class_serves(serve_app) -> None:
    served = serve_app(f"{APPS_DIR / 'two_apps.py'}::SecondApp")
    assert httpx.post(served.url("/"), timeout=30).json() == {"app": "second"}


def test_failing_setup_exits_non_zero_with_the_traceback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_minifal(
        "serve",
        str(APPS_DIR / "setup_fails_app.py"),
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback (most recent call last)" in output
    assert "weights file is missing: model-v7.safetensors" in output
    (events_path,) = data_dir.glob("runs/*/runner-0.jsonl")
    setup = next(e for e in read_events(events_path) if e["phase"] == "setup")
    assert "weights file is missing" in setup["details"]["error"]
    assert "ready" not in [event["phase"] for event in read_events(events_path)]


def test_a_failing_setup_that_left_a_thread_running_exits_at_once(tmp_path: Path) -> None:
    """The runner exits with the setup-failed code when setup() raises, whatever threads it
    started; it does not wait for them (nor for its startup_timeout)."""
    result = run_minifal(
        "serve",
        str(APPS_DIR / "setup_fails_thread_app.py"),
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        cwd=tmp_path,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_SETUP_FAILED, output
    assert "weights file is missing" in output
    assert "setup() failed" in output
