"""fal's ``fal.app`` and ``fal.ref`` surface, and the runner behaviours fal's own test apps rely
on: extra routes, a health() that raises, a declared health check as the readiness probe,
provide_hints, the current app and every RequestContext field. In-process (FastAPI's
TestClient runs the runner's ASGI app with its lifespan)."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Any

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

import minifal as fal
from minifal import ref
from minifal.compat import fal_app
from minifal.runner.asgi import build_asgi_app
from minifal.runner.realtime import take_batch
from minifal.runner.runner_hints import hints_header
from minifal.runner_contract import READY_PATH

pytestmark = pytest.mark.unit


class Output(BaseModel):
    result: int


class HealthOverride(fal.App):
    """fal's HealthOverrideApp shape: health at POST /ready, a GET /ready added, /health broken."""

    @fal.endpoint("/")
    def run(self) -> Output:
        return Output(result=3)

    @fal.endpoint("/ready", health_check=fal.HealthCheck(start_period_seconds=1))
    def ready_post(self) -> Output:
        return Output(result=0)

    def _add_extra_routes(self, app: Any) -> None:
        super()._add_extra_routes(app)

        @app.get("/ready")
        def ready_get() -> dict[str, str]:
            return {"status": "ok"}

    def health(self) -> dict[str, Any]:
        raise HTTPException(status_code=502, detail="intentionally broken")


def test_a_broken_health_is_its_own_status_and_the_declared_check_makes_the_runner_ready() -> None:
    with TestClient(build_asgi_app(HealthOverride())) as client:
        assert client.get(READY_PATH).status_code == 200
        assert client.post("/", json={}).json() == {"result": 3}
        assert client.get("/ready").json() == {"status": "ok"}
        broken = client.get("/health")
        assert broken.status_code == 502
        assert broken.json() == {"detail": "intentionally broken"}


class FailingCheck(fal.App):
    ok = False

    @fal.endpoint("/probe", health_check=fal.HealthCheck())
    def probe(self) -> Output:
        if not type(self).ok:
            raise fal.exceptions.AppException("not yet", status_code=503)
        return Output(result=0)


def test_a_runner_whose_declared_check_fails_is_not_ready() -> None:
    with TestClient(build_asgi_app(FailingCheck())) as client:
        answer = client.get(READY_PATH)
        assert answer.status_code == 503
        assert "POST /probe answered 503" in answer.json()["reason"]
        assert client.get("/health").status_code == 200  # health() is not the probe
        assert client.get("/probe").status_code == 503  # the declared path answers GET too
        FailingCheck.ok = True
        assert client.get(READY_PATH).status_code == 200
        assert client.get("/probe").json() == {"result": 0}
        assert "get" not in client.get("/openapi.json").json()["paths"]["/probe"]


class AppExceptionHealth(fal.App):
    def health(self) -> dict[str, Any]:
        raise fal.exceptions.AppException("draining", status_code=409)


def test_health_exceptions_are_mapped_like_an_endpoints() -> None:
    with TestClient(build_asgi_app(AppExceptionHealth())) as client:
        answer = client.get("/health")
        assert (answer.status_code, answer.json()) == (409, {"detail": "draining"})
        assert client.get(READY_PATH).status_code == 200  # no declared check: ready


class Hinted(fal.App):
    @fal.endpoint("/")
    def run(self) -> Output:
        return Output(result=1)

    def provide_hints(self) -> list[str]:
        return ["model-a", "b", "😀"]


def test_hints_go_out_on_every_answer_without_what_latin1_cannot_carry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING), TestClient(build_asgi_app(Hinted())) as client:
        answer = client.post("/", json={})
    assert answer.json() == {"result": 1}
    assert answer.headers["x-fal-runner-hints"] == "model-a,b"
    assert "😀" in caplog.text
    # Latin-1 beyond ASCII goes out as such (Starlette's TestClient cannot read it back; the
    # process suite's HintsApp does, through uvicorn).
    assert hints_header(lambda: ["é", "x"]) == "é,x".encode("latin-1")


def test_no_hints_header_unless_the_app_provides_hints() -> None:
    with TestClient(build_asgi_app(AppExceptionHealth())) as client:
        assert "x-fal-runner-hints" not in client.get("/health").headers
    assert hints_header(lambda: []) == b""

    def broken() -> list[str]:
        raise RuntimeError("boom")

    assert hints_header(broken) is None


def _context_from_elsewhere() -> dict[str, Any]:
    """What a helper without ``self`` sees (fal's test reads it the same way)."""
    current = ref.get_current_app()
    assert current is not None and current.current_request is not None
    context = current.current_request
    return {
        "request_id": context.request_id,
        "endpoint": context.endpoint,
        "lifecycle_preference": context.lifecycle_preference,
        "upload_policy": context.upload_policy,
    }


class ContextApp(fal.App):
    @fal.endpoint("/")
    def run(self, request: Request) -> dict[str, Any]:
        return {**_context_from_elsewhere(), "header": request.headers["x-fal-request-id"]}


def test_the_current_app_and_every_request_context_field() -> None:
    served = ContextApp()
    assert ref.get_current_app() is None
    with TestClient(build_asgi_app(served)) as client:
        assert ref.get_current_app() is served
        preference = {"expiration_duration_seconds": "3600"}
        answer = client.post(
            "/",
            json={},
            headers={
                "x-fal-request-id": "req-1",
                "x-fal-object-lifecycle-preference": json.dumps(preference),
            },
        ).json()
        plain = client.post("/", json={}).json()
    assert ref.get_current_app() is None  # cleared after teardown
    assert answer == {
        "request_id": "req-1",
        "endpoint": "/",
        "lifecycle_preference": preference,
        "upload_policy": None,
        "header": "req-1",
    }
    assert plain["lifecycle_preference"] is None
    assert plain["request_id"] == plain["header"]  # the runner made one up


def test_one_app_per_process_as_on_fal() -> None:
    first, second = ContextApp(), ContextApp()
    ref.set_current_app(first)
    try:
        ref.set_current_app(first)  # the same one again is fine
        with pytest.raises(RuntimeError, match="already set"):
            ref.set_current_app(second)
    finally:
        ref.clear_current_app(first)
    assert ref.get_current_app() is None


class RTInput(BaseModel):
    prompt: str

    def can_batch(self, other: RTInput, current_batch_size: int = 1) -> bool:
        return "don't batch" not in other.prompt


def test_batches_take_waiting_inputs_up_to_the_size_while_can_batch_agrees() -> None:
    pending = deque(RTInput(prompt=str(i)) for i in range(10))
    sizes = []
    while pending:
        sizes.append(len(take_batch(pending, 4)))
    assert sizes == [4, 4, 2]

    pending = deque(RTInput(prompt=p) for p in ["a", "b", "don't batch", "c"])
    assert [i.prompt for i in take_batch(pending, 4)] == ["a", "b"]
    assert [i.prompt for i in take_batch(pending, 4)] == ["don't batch", "c"]
    assert take_batch(deque([1, 2, 3]), 2) == [1, 2]  # no can_batch: any inputs batch


def test_fal_app_module_names() -> None:
    for name in fal_app.__all__:
        assert hasattr(fal_app, name), name
    assert fal_app.REQUEST_ID_KEY == "x-fal-request-id"
    error = fal_app.AppClientError("boom", 401, {"a": "b"})
    assert (str(error), error.status_code, error.headers) == ("boom", 401, {"a": "b"})
    assert isinstance(error, fal.exceptions.FalServerlessException)


def test_app_client_has_one_method_per_http_endpoint() -> None:
    client = fal_app.AppClient(HealthOverride, "http://127.0.0.1:1/local/health-override/")
    assert client.application == "local/health-override"
    assert client.url == "http://127.0.0.1:1/local/health-override"
    assert client.run.signature.path == "/"
    assert client.ready_post.signature.path == "/ready"
    assert client.run.return_type is Output


# -- ports of fal's unit tests (projects/fal/tests/unit/test_app.py) -------------------------------


def test_app_health_check_defaults_method_to_post() -> None:
    class HealthCheckApp(fal.App):
        @fal.endpoint("/", health_check=fal.HealthCheck())
        def hello(self) -> str:
            return "Hello, world!"

    (_, spec), *_ = HealthCheckApp.endpoints()
    assert spec.health_check is not None and spec.health_check.probe_method == "POST"
    assert fal.HealthCheck(method="get").probe_method == "GET"
    with pytest.raises(ValueError, match="method"):
        fal.HealthCheck(method="DELETE")


def test_app_kwargs_merge_into_host_kwargs_and_override_defaults() -> None:
    """fal keeps every class keyword in host_kwargs; minifal keeps its settings apart (in
    ``settings()``) and the rest in host_kwargs."""

    class KwargsApp(fal.App, keep_alive=123, resolver="pip", _scheduler="nomad"):
        pass

    assert KwargsApp.host_kwargs == {"resolver": "pip", "_scheduler": "nomad"}
    assert KwargsApp.settings().keep_alive == 123


def test_fals_scheduler_options_as_class_attributes_are_host_kwargs_too() -> None:
    class Scheduled(fal.App):
        _scheduler_options = {"storage_region": "us-east"}
        resolver = "pip"
        my_own = 1

    assert Scheduled.host_kwargs == {
        "_scheduler_options": {"storage_region": "us-east"},
        "resolver": "pip",
    }


def test_non_host_classvars_do_not_leak_into_host_kwargs() -> None:
    class LeakCheckApp(fal.App):
        requirements = ["fastapi"]
        local_python_modules = ["."]
        machine_type = "M"
        num_gpus = 1
        app_auth = "private"

    assert LeakCheckApp.host_kwargs == {}
    assert LeakCheckApp.settings().machine_type == "M"


def test_app_is_picklable_with_request_context() -> None:
    import pickle

    from minifal.request_context import (
        RequestContext,
        reset_current_request,
        set_current_request,
    )

    app = ContextApp()
    token = set_current_request(RequestContext("req-1", "/"))
    try:
        loaded = pickle.loads(pickle.dumps(app))
    finally:
        reset_current_request(token)
    assert isinstance(loaded, ContextApp)
    assert loaded.current_request is None  # outside any request


def test_health_route_supports_async_health() -> None:
    import fastapi

    class AsyncHealthApp(fal.App):
        async def health(self) -> dict[str, str]:
            return {"status": "ok"}

    api = fastapi.FastAPI()
    AsyncHealthApp()._add_extra_routes(api)
    response = TestClient(api).get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_a_batching_realtime_method_must_take_its_batch() -> None:
    from minifal.endpoints import RealtimeOptions
    from minifal.runner.realtime_modes import realtime_shape

    class Batching(fal.App):
        def one(self, input: RTInput) -> RTInput:
            return input

        def many(self, input: RTInput, *inputs: RTInput) -> RTInput:
            return input

    app = Batching()
    with pytest.raises(TypeError, match=r"\(input, \*inputs\)"):
        realtime_shape(app.one, RealtimeOptions(max_batch_size=4))
    assert realtime_shape(app.many, RealtimeOptions(max_batch_size=4)).mode == "unary"


RELEASED = threading.Event()
STARTED = threading.Event()


def _decode_and_release(message: bytes) -> Any:
    """The session's reader decodes here: "release" frees the busy call, after the reader has
    taken every frame sent before it (so the buffer's content is known, without timing)."""
    value = json.loads(message)
    if value["prompt"] == "release":
        RELEASED.set()
    return value


class Buffered(fal.App):
    @fal.realtime("/rt", buffering=2, decode_message=_decode_and_release)
    def answer(self, input: RTInput) -> RTInput:
        if input.prompt == "busy":
            STARTED.set()
            assert RELEASED.wait(10)
        return input


def test_a_full_buffer_drops_the_oldest_unanswered_input() -> None:
    RELEASED.clear()
    STARTED.clear()
    with (
        TestClient(build_asgi_app(Buffered())) as client,
        client.websocket_connect("/rt") as ws,
    ):
        ws.send_bytes(json.dumps({"prompt": "busy"}).encode())
        assert STARTED.wait(10)  # the call is running: what follows waits in the buffer
        for prompt in ["1", "2", "3", "4", "release"]:
            ws.send_bytes(json.dumps({"prompt": prompt}).encode())
        answers = [ws.receive_bytes() for _ in range(3)]
    from minifal.runner.realtime_frames import msgpack_decode

    assert [msgpack_decode(a)["prompt"] for a in answers] == ["busy", "4", "release"]
