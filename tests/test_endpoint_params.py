"""Endpoints are FastAPI routes: what FastAPI injects works next to the input model (issue 16, 5).

One real ``minifal serve`` of tests/apps/endpoint_params_app.py; every answer and the OpenAPI
document are what FastAPI gives for the same method, as on fal (fal hands the bound method to
``add_api_route``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import APPS_DIR, ServedApp, start_served_app
from fleet_support import poll_until
from websockets.sync.client import connect

import minifal as fal

PARAMS_APP = APPS_DIR / "endpoint_params_app.py"
WAIT_S = 20.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    with start_served_app(str(PARAMS_APP), tmp_path_factory.mktemp("params")) as server:
        yield server


@pytest.fixture(scope="module")
def client(served: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base_url, timeout=WAIT_S) as http:
        yield http


@pytest.fixture(scope="module")
def openapi(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def locations(response: httpx.Response) -> list[list[str | int]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


@pytest.mark.process
def test_request(client: httpx.Client) -> None:
    response = client.post(
        "/request", json={"prompt": "hi"}, headers={"x-custom": "yes", "x-fal-request-id": "r-1"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "text": "hi",
        "details": {"path": "/request", "method": "POST", "x_custom": "yes", "request_id": "r-1"},
    }
    # Before the input model, in an async method, reading the body itself.
    response = client.post("/request/async", json={"prompt": "raw"})
    assert response.json() == {"text": "raw", "details": {"raw_prompt": "raw"}}


@pytest.mark.process
def test_response_sets_status_and_headers(client: httpx.Client) -> None:
    response = client.post("/response", json={"prompt": "hi", "steps": 3})
    assert response.status_code == 201
    assert response.headers["x-fal-billable-units"] == "3"
    assert response.json() == {"text": "hi", "details": {}}


@pytest.mark.process
def test_background_tasks_run_after_the_answer(client: httpx.Client, served: ServedApp) -> None:
    response = client.post("/background", json={"prompt": "later"})
    assert response.status_code == 200
    note = served.data_dir / "background.txt"
    poll_until(lambda: note.exists() and note.read_text() == "later", WAIT_S, "the background task")


@pytest.mark.process
def test_header(client: httpx.Client) -> None:
    response = client.post(
        "/header", json={"prompt": "hi"}, headers={"x-user": "ann", "x-count": "4"}
    )
    assert response.json() == {"text": "hi", "details": {"user": "ann", "count": 4}}
    assert locations(client.post("/header", json={"prompt": "hi"})) == [["header", "x-user"]]
    bad_count = client.post(
        "/header", json={"prompt": "hi"}, headers={"x-user": "a", "x-count": "-1"}
    )
    assert locations(bad_count) == [["header", "x-count"]]


@pytest.mark.process
def test_query(client: httpx.Client) -> None:
    response = client.post("/query?verbose=true&limit=5", json={"prompt": "hi"})
    assert response.json() == {"text": "hi", "details": {"verbose": True, "limit": 5}}
    assert client.post("/query", json={"prompt": "hi"}).json()["details"] == {
        "verbose": False,
        "limit": 10,
    }
    assert locations(client.post("/query?limit=500", json={"prompt": "hi"})) == [["query", "limit"]]


@pytest.mark.process
def test_body_next_to_the_model_embeds_both_as_fastapi_does(client: httpx.Client) -> None:
    response = client.post("/body", json={"input": {"prompt": "hi"}, "seed": 7})
    assert response.json() == {"text": "hi", "details": {"seed": 7}}
    assert locations(client.post("/body", json={"input": {"steps": 99}, "seed": -1})) == [
        ["body", "input", "prompt"],
        ["body", "input", "steps"],
        ["body", "seed"],
    ]


@pytest.mark.process
def test_depends(client: httpx.Client) -> None:
    response = client.post("/depends", json={"prompt": "hi"}, headers={"x-api-version": "2"})
    assert response.json() == {"text": "hi", "details": {"version": "v2"}}
    assert client.post("/depends", json={"prompt": "hi"}).json()["details"] == {"version": "v1"}


@pytest.mark.process
def test_422_still_names_the_model_field(client: httpx.Client) -> None:
    for path in ("/request", "/response", "/background", "/query", "/depends"):
        response = client.post(path, json={"prompt": "hi", "steps": 0})
        assert locations(response) == [["body", "steps"]], path
    missing = client.post("/header", json={}, headers={"x-user": "ann"})
    assert locations(missing) == [["body", "prompt"]]


@pytest.mark.process
def test_a_raw_websocket_gets_its_query_parameter(served: ServedApp) -> None:
    with connect(served.ws_base_url + "ws?token=abc", open_timeout=WAIT_S) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=WAIT_S) == "abc: hello"
    with connect(served.ws_base_url + "ws", open_timeout=WAIT_S) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=WAIT_S) == "none: hello"


def _parameters(openapi: dict[str, Any], path: str) -> dict[str, str]:
    operation = openapi["paths"][path]["post"]
    return {parameter["name"]: parameter["in"] for parameter in operation.get("parameters", [])}


def _body_ref(openapi: dict[str, Any], path: str) -> str:
    body = openapi["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    return body["content"]["application/json"]["schema"]["$ref"]


@pytest.mark.process
def test_openapi_keeps_the_model_as_the_body(openapi: dict[str, Any]) -> None:
    for path in ("/request", "/request/async", "/response", "/background"):
        assert _body_ref(openapi, path) == "#/components/schemas/Input", path
        assert _parameters(openapi, path) == {}, path
    assert _body_ref(openapi, "/header") == "#/components/schemas/Input"
    assert _parameters(openapi, "/header") == {"x-user": "header", "x-count": "header"}
    assert _parameters(openapi, "/query") == {"verbose": "query", "limit": "query"}
    assert _parameters(openapi, "/depends") == {"x-api-version": "header"}
    # Body(...) beside the model: one embedded body with both, as FastAPI (and fal) write it.
    embedded = openapi["components"]["schemas"]["Body_with_body_body_post"]
    assert embedded["properties"]["input"] == {"$ref": "#/components/schemas/Input"}
    assert embedded["required"] == ["input", "seed"]
    # The runner's own plumbing never shows.
    assert "minifal" not in str(openapi)
    assert openapi["paths"]["/ws"]["x-fal-protocol"]["type"] == "websocket"


@pytest.mark.unit
def test_billing_is_declared_on_the_endpoint_as_fal() -> None:
    class Images:
        def declaration(self) -> dict[str, Any]:
            return {
                "version": 1,
                "schema_id": "images/v1",
                "app": {"type": "object", "properties": {"images": {"type": "integer"}}},
            }

    class Billed(fal.App):
        @fal.endpoint("/", billing=Images())
        def generate(self, input: dict) -> dict:
            return input

    assert Billed.get_billing_components()["/"]["schema_id"] == "images/v1"
    with pytest.raises(ValueError, match="Websocket endpoints cannot declare billing"):
        fal.endpoint("/ws", is_websocket=True, billing=Images())
    with pytest.raises(TypeError, match="declaration"):
        fal.endpoint("/", billing=Images)
