"""Realtime endpoints whose input is a stream: client streaming and bidirectional (issue 16, 4).

Modes are read from type hints as fal 1.83 reads them (the table below is what fal's own
``@fal.realtime`` infers for the same apps). The sessions run over real websockets against a
real ``minifal serve`` and, for the app written from fal's realtime docs page, through the
gateway of a real ``minifal run``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from conftest import APPS_DIR, ServedApp, start_served_app
from fleet_support import Fleet, poll_until, start_fleet
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import minifal as fal
from minifal.endpoints import RealtimeOptions
from minifal.runner.app_loader import load_app_class
from minifal.runner.realtime_modes import realtime_shape

STREAMS_APP = APPS_DIR / "realtime_streams_app.py"
ECHO_APP = APPS_DIR / "echo_app.py"
FAL_REALTIME_APP = Path(__file__).parent / "apps_fal" / "realtime_app.py"
WAIT_S = 20.0

# What fal 1.83's @fal.realtime infers for the same methods (its route signature's
# realtime_mode, as its OpenAPI x-fal-protocol shows).
FAL_MODES = {
    STREAMS_APP: {
        "/echo": "bidi",
        "/echo/returned": "bidi",
        "/echo/idle": "bidi",
        "/sum": "client_streaming",
        "/sum/first-three": "client_streaming",
        "/dicts": "bidi",
        "/untyped": "bidi",
        "/json": "bidi",
        "/unary": "unary",
    },
    FAL_REALTIME_APP: {
        "/realtime": "unary",
        "/realtime/echo": "bidi",
        "/realtime/sum": "client_streaming",
    },
    ECHO_APP: {
        "/realtime": "unary",
        "/realtime/async": "unary",
        "/realtime/stream": "server_streaming",
        "/realtime/async-stream": "server_streaming",
    },
}


# -- the shape of a session, from type hints ------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("app_file", list(FAL_MODES), ids=lambda path: path.name)
def test_modes_are_inferred_as_fal_infers_them(app_file: Path) -> None:
    app_class = load_app_class(str(app_file))
    app = app_class()
    modes = {
        spec.path: realtime_shape(getattr(app, name), spec.realtime).mode
        for name, spec in app_class.endpoints()
        if spec.kind == "realtime"
    }
    assert modes == FAL_MODES[app_file]


def _shape_error(method: Any) -> str:
    with pytest.raises(TypeError) as refused:
        realtime_shape(method, RealtimeOptions())
    return str(refused.value)


@pytest.mark.unit
def test_shapes_fal_cannot_serve_are_refused_when_the_app_starts() -> None:
    class Shapes:
        def sync_stream_in(self, inputs: AsyncIterator[dict]) -> dict:
            return {}

        def sync_iterator_in(self, inputs: Iterator[dict]) -> dict:
            return {}

        async def sync_stream_out(self, inputs: AsyncIterator[dict]) -> Iterator[dict]:
            return iter([])

        async def two_inputs(self, first: dict, second: dict) -> dict:
            return {}

    shapes = Shapes()
    assert "must be 'async def'" in _shape_error(shapes.sync_stream_in)
    assert "AsyncIterator[...]" in _shape_error(shapes.sync_iterator_in)
    assert "AsyncIterator[...]" in _shape_error(shapes.sync_stream_out)
    assert "need defaults" in _shape_error(shapes.two_inputs)


@pytest.mark.unit
def test_realtime_options_are_checked() -> None:
    for bad in ({"buffering": 0}, {"session_timeout": -1}, {"max_batch_size": 0}):
        with pytest.raises(ValueError):
            fal.realtime("/r", **bad)
    with pytest.raises(TypeError):
        fal.realtime("/r", encode_message="json")

    def method(self: Any, input: dict) -> dict:
        return input

    fal.realtime("/r")(method)
    with pytest.raises(ValueError, match="multiple routes"):
        fal.endpoint("/again")(method)


# -- sessions against minifal serve ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with start_served_app(str(STREAMS_APP), tmp_path_factory.mktemp("streams")) as server:
        yield server


def send(websocket: ClientConnection, message: Any) -> None:
    websocket.send(msgpack.packb(message))


def recv_output(websocket: ClientConnection) -> Any:
    message = websocket.recv(timeout=WAIT_S)
    assert isinstance(message, bytes), f"expected a binary frame, got {message!r}"
    return msgpack.unpackb(message)


def recv_error(websocket: ClientConnection) -> dict[str, Any]:
    message = websocket.recv(timeout=WAIT_S)
    assert isinstance(message, str), f"expected a text error frame, got {message!r}"
    frame = json.loads(message)
    assert frame["type"] == "x-fal-error"
    return frame


def assert_closed(websocket: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        websocket.recv(timeout=WAIT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def noted(server: ServedApp, name: str, line: str) -> None:
    """Wait (bounded) until the app noted ``line`` in ``<data dir>/<name>.log``."""
    log = server.data_dir / f"{name}.log"

    def seen() -> bool:
        return log.exists() and line in log.read_text().splitlines()

    poll_until(seen, WAIT_S, f"{line!r} in {log.name}")


@pytest.mark.process
def test_bidirectional_answers_each_frame_as_it_arrives(served: ServedApp) -> None:
    with connect(served.ws_base_url + "echo", open_timeout=WAIT_S) as websocket:
        for index, text in enumerate(["one", "two", "three"]):
            send(websocket, {"text": text, "index": index})
            # Answered before the next frame is sent: outputs do not wait for the stream's end.
            assert recv_output(websocket) == {
                "text": text.upper(),
                "index": index,
                "seen": index + 1,
            }


@pytest.mark.process
def test_a_bad_frame_is_an_error_frame_and_the_stream_goes_on(served: ServedApp) -> None:
    with connect(served.ws_base_url + "echo", open_timeout=WAIT_S) as websocket:
        send(websocket, {"text": "first"})
        assert recv_output(websocket)["seen"] == 1
        send(websocket, {"text": "x", "index": -1})
        frame = recv_error(websocket)
        assert frame["error"] == "VALIDATION_ERROR"
        assert frame["reason"][0]["loc"] == ["index"]
        send(websocket, {"index": 2})
        assert recv_error(websocket)["reason"][0]["loc"] == ["text"]
        websocket.send(b"\xc1 is never valid msgpack")
        assert recv_error(websocket)["error"] == "BAD_MESSAGE"
        # The rejected frames never reached the endpoint's iterator.
        send(websocket, {"text": "second"})
        assert recv_output(websocket) == {"text": "SECOND", "index": 0, "seen": 2}


@pytest.mark.process
def test_a_client_that_disconnects_ends_the_iterator(served: ServedApp) -> None:
    with connect(served.ws_base_url + "echo", open_timeout=WAIT_S) as websocket:
        for text in ("leaving", "soon"):
            send(websocket, {"text": text})
            recv_output(websocket)
    noted(served, "echo", "leaving ended after 2")


@pytest.mark.process
def test_app_errors_end_the_session_with_an_error_frame(served: ServedApp) -> None:
    with connect(served.ws_base_url + "echo", open_timeout=WAIT_S) as websocket:
        send(websocket, {"text": "fine"})
        recv_output(websocket)
        send(websocket, {"text": "fail"})
        assert recv_error(websocket) == {
            "type": "x-fal-error",
            "error": "APP_ERROR",
            "reason": "cannot echo that",
        }
        assert_closed(websocket)
    noted(served, "echo", "fine ended after 2")

    with connect(served.ws_base_url + "echo", open_timeout=WAIT_S) as websocket:
        send(websocket, {"text": "crash"})
        frame = recv_error(websocket)
        assert frame["error"] == "INTERNAL_ERROR"
        assert "secret stream detail" not in json.dumps(frame)
        assert_closed(websocket)
    assert "secret stream detail" in served.log()


@pytest.mark.process
def test_client_streaming_answers_once_the_session_goes_idle(served: ServedApp) -> None:
    with connect(served.ws_base_url + "sum", open_timeout=WAIT_S) as websocket:
        for value in (1, 2, 3.5, 4):
            send(websocket, {"value": value})
        send(websocket, {"value": "not a number"})
        assert recv_error(websocket)["error"] == "VALIDATION_ERROR"
        # No more frames: after session_timeout the stream ends, the endpoint answers, and the
        # session closes with fal's TIMEOUT frame.
        assert recv_output(websocket) == {"total": 10.5, "count": 4}
        assert recv_error(websocket) == {
            "type": "x-fal-error",
            "error": "TIMEOUT",
            "reason": "no inputs, reconnect when needed!",
        }
        assert_closed(websocket)


@pytest.mark.process
def test_client_streaming_that_stops_reading_answers_at_once(served: ServedApp) -> None:
    with connect(served.ws_base_url + "sum/first-three", open_timeout=WAIT_S) as websocket:
        for value in range(1, 6):
            send(websocket, {"value": value})
        assert recv_output(websocket) == {"total": 6, "count": 3}
        assert_closed(websocket)  # no TIMEOUT frame: the session did not time out


@pytest.mark.process
def test_a_client_that_leaves_ends_a_client_stream(served: ServedApp) -> None:
    with connect(served.ws_base_url + "sum", open_timeout=WAIT_S) as websocket:
        send(websocket, {"value": 40})
        send(websocket, {"value": 2})
    noted(served, "sum", "42 ended after 2")


@pytest.mark.process
def test_an_idle_bidirectional_session_times_out(served: ServedApp) -> None:
    with connect(served.ws_base_url + "echo/idle", open_timeout=WAIT_S) as websocket:
        send(websocket, {"text": "only"})
        assert recv_output(websocket) == {"text": "only", "index": 0, "seen": 1}
        assert recv_error(websocket)["error"] == "TIMEOUT"
        assert_closed(websocket)
    noted(served, "echo_idle", "ended after 1")


@pytest.mark.process
def test_other_forms_fal_accepts(served: ServedApp) -> None:
    with connect(served.ws_base_url + "echo/returned", open_timeout=WAIT_S) as websocket:
        send(websocket, {"text": "abc", "index": 4})
        assert recv_output(websocket) == {"text": "cba", "index": 4, "seen": 0}
    with connect(served.ws_base_url + "dicts", open_timeout=WAIT_S) as websocket:
        send(websocket, {"b": 1, "a": [1, 2]})
        assert recv_output(websocket) == {"keys": ["a", "b"], "size": 2}
        send(websocket, [1, 2])
        assert recv_error(websocket)["error"] == "VALIDATION_ERROR"
    with connect(served.ws_base_url + "untyped", open_timeout=WAIT_S) as websocket:
        send(websocket, [1, "two", None])
        assert recv_output(websocket) == {"got": [1, "two", None]}
    with connect(served.ws_base_url + "json", open_timeout=WAIT_S) as websocket:
        websocket.send(json.dumps({"text": "j", "index": 1}).encode())
        assert json.loads(websocket.recv(timeout=WAIT_S)) == {"text": "j", "index": 1, "seen": 0}


@pytest.mark.process
def test_openapi_describes_realtime_modes_as_fal(served: ServedApp) -> None:
    spec = httpx.get(served.url("/openapi.json"), timeout=WAIT_S).json()
    modes = {
        path: item["x-fal-protocol"]["realtimeMode"]
        for path, item in spec["paths"].items()
        if "x-fal-protocol" in item
    }
    assert modes == FAL_MODES[STREAMS_APP]
    sum_path = spec["paths"]["/sum"]
    assert sum_path["x-fal-protocol"]["config"]["sessionTimeout"] == 2.0
    assert sum_path["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Number"
    }
    assert spec["paths"]["/json"]["x-fal-protocol"]["contentType"] == "application/json"
    assert spec["x-fal-order-paths"] == sorted(FAL_MODES[STREAMS_APP])


@pytest.mark.process
def test_shutdown_ends_open_streams(tmp_path: Path) -> None:
    with start_served_app(str(STREAMS_APP), tmp_path) as server:
        with connect(server.ws_base_url + "echo", open_timeout=WAIT_S) as websocket:
            send(websocket, {"text": "open"})
            recv_output(websocket)
            # SIGTERM with a session open and waiting for input: the runner closes it (1012),
            # the method's stream ends, and the runner exits cleanly.
            assert server.terminate() == 0
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=WAIT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert "open ended after 1" in (server.data_dir / "echo.log").read_text()


# -- fal's realtime docs app through the gateway --------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with start_fleet(FAL_REALTIME_APP, tmp_path_factory.mktemp("fleet"), workers=1) as running:
        yield running


def all_runners_idle(fleet: Fleet) -> None:
    def idle() -> bool:
        return all(
            runner["state"] == "IDLE" and runner["in_flight_requests"] == 0
            for runner in fleet.runners()
        )

    poll_until(idle, WAIT_S, "every runner IDLE", fleet)


@pytest.mark.process
def test_the_docs_app_answers_end_to_end_through_the_gateway(fleet: Fleet) -> None:
    base = fleet.ws_base_url + "local/realtime-app/"
    with fleet.client() as client:
        assert client.post("/", json={"prompt": "hi"}).json() == {"output": "hi"}
        spec = client.get("/openapi.json").json()
    assert spec["paths"]["/realtime/sum"]["x-fal-protocol"]["realtimeMode"] == "client_streaming"

    with connect(base + "ws", open_timeout=WAIT_S) as websocket:
        messages = [json.loads(websocket.recv(timeout=WAIT_S)) for _ in range(3)]
        assert messages == [{"message": "Hello world!"}] * 3

    with connect(base + "realtime", open_timeout=WAIT_S) as websocket:
        send(websocket, {"prompt": "unary"})
        assert recv_output(websocket) == {"output": "unary"}

    with connect(base + "realtime/echo", open_timeout=WAIT_S) as websocket:
        for prompt in ("frame 1", "frame 2"):
            send(websocket, {"prompt": prompt})
            assert recv_output(websocket) == {"output": prompt}
        send(websocket, {"no": "prompt"})
        assert recv_error(websocket)["error"] == "VALIDATION_ERROR"
        send(websocket, {"prompt": "frame 3"})
        assert recv_output(websocket) == {"output": "frame 3"}
    # The client left: the runner's session ended and its slot is free again.
    all_runners_idle(fleet)

    with connect(base + "realtime/sum", open_timeout=WAIT_S) as websocket:
        for value in (0.5, 1.5, 2):
            send(websocket, {"value": value})
        assert recv_output(websocket) == {"total": 4.0, "count": 3}
        assert recv_error(websocket)["error"] == "TIMEOUT"
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=WAIT_S)
    all_runners_idle(fleet)
