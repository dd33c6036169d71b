"""The request body limit: 413 without reading the body, on ``minifal serve`` and the gateway."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import APPS_DIR, ServedApp, start_served_app
from fleet_support import APPS_FLEET_DIR, Fleet, start_fleet

from minifal.fleet.backends.base import RunnerLaunch
from minifal.fleet.backends.local import LocalRunnerBackend
from minifal.host import envs
from minifal.host.body_limit import DEFAULT_MAX_BODY_BYTES, configured_max_body_bytes, parse_size

SIXTY_MB = 60_000_000
JSON = {"content-type": "application/json"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [("123", 123), ("50MB", 50_000_000), ("1MiB", 1024 * 1024), ("1.5kb", 1500), ("2 GiB", 2**31)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "ten", "5 parsecs", "0", "-1MB"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.unit
def test_the_default_leaves_room_for_a_data_uri_image_and_refuses_60_mb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MINIFAL_MAX_BODY_SIZE", raising=False)
    assert configured_max_body_bytes() == DEFAULT_MAX_BODY_BYTES
    a_36_mb_png_as_data_uri = len("data:image/png;base64,") + 4 * (36_000_000 // 3 + 1)
    assert a_36_mb_png_as_data_uri < DEFAULT_MAX_BODY_BYTES < SIXTY_MB


def declared_too_large_status(port: int, path: str = "/") -> int:
    """Send a request declaring a 60 MB body, then only its first kilobyte: a server that
    answers is one that did not wait to read (or buffer) the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {SIXTY_MB}\r\n\r\n".encode()
            + b'{"prompt": "'
            + b"a" * 1024
        )
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def chunked_body(total: int, chunk: int = 4096) -> Iterator[bytes]:
    """A JSON body of ``total`` bytes sent without a content-length (chunked)."""
    yield b'{"prompt": "'
    sent = 12
    while sent < total - 2:
        piece = min(chunk, total - 2 - sent)
        yield b"a" * piece
        sent += piece
    yield b'"}'


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    work_dir = tmp_path_factory.mktemp("limited")
    app = str(APPS_DIR / "echo_app.py")
    with start_served_app(app, work_dir, extra_env={"MINIFAL_MAX_BODY_SIZE": "100KB"}) as served:
        yield served


@pytest.mark.process
def test_serve_refuses_a_declared_60_mb_body_without_reading_it(echo_server: ServedApp) -> None:
    assert declared_too_large_status(echo_server.port) == 413


@pytest.mark.process
def test_serve_refuses_a_chunked_body_once_it_passes_the_limit(limited_server: ServedApp) -> None:
    response = httpx.post(limited_server.url("/"), content=chunked_body(300_000), timeout=30)
    assert response.status_code == 413
    assert "100000 bytes" in response.json()["detail"]


@pytest.mark.process
def test_serve_takes_a_body_under_the_limit(limited_server: ServedApp) -> None:
    body = json.dumps({"prompt": "a" * 90_000}).encode()
    response = httpx.post(limited_server.url("/"), content=body, headers=JSON, timeout=30)
    assert response.status_code == 200, response.text
    chunked = httpx.post(
        limited_server.url("/"), content=chunked_body(90_000), headers=JSON, timeout=30
    )
    assert chunked.status_code == 200, chunked.text


@pytest.fixture(scope="module")
def limited_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work_dir = tmp_path_factory.mktemp("limited-fleet")
    app = APPS_FLEET_DIR / "fleet_app.py"
    with start_fleet(app, work_dir, workers=1, extra_args=("--max-body-size", "100KB")) as fleet:
        yield fleet


@pytest.mark.process
@pytest.mark.parametrize("path", ["/", "/queue/"])
def test_gateway_refuses_a_declared_60_mb_body_without_reading_it(
    limited_fleet: Fleet, path: str
) -> None:
    assert declared_too_large_status(limited_fleet.port, path) == 413


@pytest.mark.process
@pytest.mark.parametrize("path", ["/", "/queue/"])
def test_gateway_refuses_a_chunked_body_once_it_passes_the_limit(
    limited_fleet: Fleet, path: str
) -> None:
    with limited_fleet.client() as client:
        response = client.post(path, content=chunked_body(300_000))
    assert response.status_code == 413
    assert "100000 bytes" in response.json()["detail"]


@pytest.mark.process
def test_gateway_passes_a_body_under_the_limit(limited_fleet: Fleet) -> None:
    with limited_fleet.client() as client:
        response = client.post("/", content=chunked_body(90_000), headers=JSON)
    assert response.status_code == 200, response.text


@pytest.mark.process
def test_the_gateway_default_refuses_a_declared_60_mb_body(tmp_path: Path) -> None:
    with start_fleet(APPS_FLEET_DIR / "fleet_app.py", tmp_path, workers=1) as fleet:
        assert declared_too_large_status(fleet.port) == 413


@pytest.mark.process
def test_a_fleets_runners_answer_with_the_gateways_limit(tmp_path: Path) -> None:
    """The limit reaches each runner through the runner contract's environment (local and, on
    its node, Ray), not through the gateway's own environment."""
    launch = RunnerLaunch(
        app_reference="app.py",
        data_dir=tmp_path,
        run_id="r",
        run_dir=tmp_path / "runs" / "r",
        public_url="http://127.0.0.1:8080/",
        use_gpus=False,
        max_body_bytes=100_000,
    )
    env = LocalRunnerBackend(launch)._environment(launch, "runner-0", [])
    assert parse_size(envs.MAX_BODY_SIZE.get(env)) == 100_000
