"""``minifal run``: a real gateway and real runner processes, called over real HTTP (issue 3).

Read-only tests share one two-runner fleet (module-scoped); tests that need their own settings
(auth, TLS) or stop the fleet start their own. Waits are bounded polls, never fixed sleeps, and
nothing asserts how long anything took.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trustme
from conftest import clean_env, run_minifal
from fleet_support import (
    APPS_FLEET_DIR,
    Fleet,
    logged_auth_key,
    pid_is_gone,
    poll_until,
    start_fleet,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.process

FLEET_APP = APPS_FLEET_DIR / "fleet_app.py"
PRIVATE_APP = APPS_FLEET_DIR / "private_app.py"
APP_NAME = "fleet-app"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with start_fleet(FLEET_APP, tmp_path_factory.mktemp("fleet")) as running:
        yield running


@pytest.fixture(scope="module")
def client(fleet: Fleet) -> Iterator[httpx.Client]:
    with fleet.client() as http:
        yield http


def wait_all_idle(fleet: Fleet) -> list[dict[str, Any]]:
    """Every runner ready and without work (a request's slot is freed just after its answer)."""

    def idle() -> list[dict[str, Any]] | None:
        runners = fleet.runners()
        if all(r["state"] == "IDLE" and r["in_flight_requests"] == 0 for r in runners):
            return runners
        return None

    return poll_until(idle, WAIT_S, "every runner IDLE", fleet)


def submit(client: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(f"/queue/local/{APP_NAME}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def status_of(client: httpx.Client, handle: dict[str, Any]) -> dict[str, Any]:
    response = client.get(handle["status_url"])
    assert response.status_code in (200, 202), response.text
    return response.json()


def wait_status(
    client: httpx.Client, handle: dict[str, Any], wanted: str, fleet: Fleet
) -> dict[str, Any]:
    return poll_until(
        lambda: (s := status_of(client, handle))["status"] == wanted and s,
        WAIT_S,
        f"{handle['request_id']} to be {wanted}",
        fleet,
    )


def sse_events(lines: Iterator[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data:")) for line in lines if line.startswith("data:")]


# -- load sharing and the runners table ------------------------------------------------------------


def test_two_runners_share_load(fleet: Fleet, client: httpx.Client, tmp_path: Path) -> None:
    wait_all_idle(fleet)

    def call(index: int) -> dict[str, Any]:
        response = client.post("/", json={"seconds": 1.0, "tag": str(index)})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, range(4)))

    assert [a["tag"] for a in answers] == ["0", "1", "2", "3"]
    assert {a["runner_id"] for a in answers} == {"runner-0", "runner-1"}
    runners = wait_all_idle(fleet)
    assert sorted(r["runner_id"] for r in runners) == ["runner-0", "runner-1"]
    for runner in runners:
        assert runner["alias"] == APP_NAME
        assert runner["startup_seconds"] > 0
        assert isinstance(runner["pid"], int)

    listed = run_minifal("runners", "--url", fleet.base_url, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    table = json.loads(listed.stdout)
    assert table["app"] == APP_NAME
    assert {r["runner_id"]: r["state"] for r in table["runners"]} == {
        "runner-0": "IDLE",
        "runner-1": "IDLE",
    }
    text = run_minifal("runners", "--url", fleet.base_url, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "Runner ID" in text.stdout and "runner-1" in text.stdout


# -- fal's queue protocol --------------------------------------------------------------------------


def test_queue_round_trip(fleet: Fleet, client: httpx.Client) -> None:
    handle = submit(client, {"seconds": 1.0, "tag": "queued"})
    request_id = handle["request_id"]
    base = fleet.url(f"queue/local/{APP_NAME}/requests/{request_id}")
    assert handle["response_url"] == base
    assert handle["status_url"] == f"{base}/status"
    assert handle["cancel_url"] == f"{base}/cancel"

    seen: list[str] = []

    def completed() -> dict[str, Any] | None:
        status = status_of(client, handle)
        seen.append(status["status"])
        if status["status"] == "IN_QUEUE":
            assert isinstance(status["queue_position"], int)
        return status if status["status"] == "COMPLETED" else None

    final = poll_until(completed, WAIT_S, "the queued request to complete", fleet)
    assert "IN_PROGRESS" in seen
    assert final["metrics"]["inference_time"] >= 0
    assert "error" not in final

    result = client.get(handle["response_url"])
    assert result.status_code == 200
    assert result.headers["x-fal-request-id"] == request_id
    assert result.json()["tag"] == "queued"
    # The app sees the same request id the caller got.
    assert result.json()["request_id"] == request_id

    with_logs = client.get(handle["status_url"], params={"logs": 1}).json()
    assert with_logs["status"] == "COMPLETED" and "logs" in with_logs
    assert client.get(f"/queue/local/{APP_NAME}/requests/no-such-id/status").status_code == 404


def test_status_stream_ends_with_completed(fleet: Fleet, client: httpx.Client) -> None:
    handle = submit(client, {"seconds": 0.5, "tag": "streamed"})
    with client.stream("GET", handle["status_url"] + "/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    statuses = [event["status"] for event in events]
    assert statuses[-1] == "COMPLETED"
    assert statuses.count("COMPLETED") == 1
    assert set(statuses) <= {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    assert events[-1]["metrics"]["inference_time"] >= 0


def test_busy_fleet_queue_priority_cancel_and_start_timeout(
    fleet: Fleet, client: httpx.Client
) -> None:
    """Both runners busy: later requests wait in line, ``normal`` before ``low``."""
    wait_all_idle(fleet)
    first = submit(client, {"seconds": 2.5, "tag": "first"})
    second = submit(client, {"seconds": 3.5, "tag": "second"})
    wait_status(client, first, "IN_PROGRESS", fleet)
    wait_status(client, second, "IN_PROGRESS", fleet)
    # A running request is asked to stop (this app ignores it and finishes).
    running_cancel = client.put(second["cancel_url"])
    assert running_cancel.status_code == 202
    assert running_cancel.json() == {"status": "CANCELLATION_REQUESTED"}

    to_cancel = submit(client, {"tag": "cancel-me"})
    assert to_cancel["status"] == "IN_QUEUE" and to_cancel["queue_position"] == 0
    expiring = submit(client, {"tag": "expires"}, **{"X-Fal-Request-Timeout": "0.5"})
    low = submit(client, {"tag": "low"}, **{"X-Fal-Queue-Priority": "low"})
    normal = submit(client, {"tag": "normal"}, **{"X-Fal-Queue-Priority": "normal"})

    low_status, normal_status = status_of(client, low), status_of(client, normal)
    assert low_status["status"] == normal_status["status"] == "IN_QUEUE"
    assert normal_status["queue_position"] < low_status["queue_position"]

    cancelled = client.put(to_cancel["cancel_url"])
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json() == {"status": "CANCELLATION_REQUESTED"}
    assert status_of(client, to_cancel)["status"] == "COMPLETED"
    assert client.get(to_cancel["response_url"]).status_code == 499

    # A sync call waits in the same line and may time out there too.
    sync_expired = client.post("/", json={"tag": "sync"}, headers={"X-Fal-Request-Timeout": "0.3"})
    assert sync_expired.status_code == 504
    assert sync_expired.headers["x-fal-request-timeout-type"] == "user"

    expired_status = wait_status(client, expiring, "COMPLETED", fleet)
    assert expired_status["error"]
    expired = client.get(expiring["response_url"])
    assert expired.status_code == 504
    assert expired.headers["x-fal-request-timeout-type"] == "user"

    results = {}
    for handle in (first, second, normal, low):
        wait_status(client, handle, "COMPLETED", fleet)
        response = client.get(handle["response_url"])
        assert response.status_code == 200, response.text
        results[response.json()["tag"]] = response.json()
    # The first runner to free up took the normal-priority request; the low one came after.
    assert results["normal"]["started_at"] < results["low"]["started_at"]

    again = client.put(normal["cancel_url"])
    assert again.status_code == 400
    assert again.json() == {"status": "ALREADY_COMPLETED"}


def test_bad_queue_headers_are_422(client: httpx.Client) -> None:
    priority = client.post(
        f"/queue/local/{APP_NAME}", json={}, headers={"X-Fal-Queue-Priority": "urgent"}
    )
    assert priority.status_code == 422
    timeout = client.post(
        f"/queue/local/{APP_NAME}", json={}, headers={"X-Fal-Request-Timeout": "soon"}
    )
    assert timeout.status_code == 422


def test_fal_path_form_bare_path_and_unknown_path(client: httpx.Client) -> None:
    for path in (f"/local/{APP_NAME}", f"/someone/{APP_NAME}/", "/"):
        response = client.post(path, json={"tag": path})
        assert response.status_code == 200, (path, response.text)
        assert response.json()["tag"] == path
        assert response.headers["x-fal-request-id"] == response.json()["request_id"]

    # As on fal, any request to a ``queue.`` host is a queue request.
    queued = client.post(f"/local/{APP_NAME}", json={}, headers={"host": "queue.localhost"})
    assert queued.status_code == 200
    assert {"request_id", "status_url"} <= set(queued.json())

    unknown = client.post(f"/local/{APP_NAME}/nope", json={})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "Path /nope not found"}
    assert client.post("/nope", json={}).json() == {"detail": "Path /nope not found"}
    queued_unknown = client.post(f"/queue/local/{APP_NAME}/nope", json={})
    assert queued_unknown.status_code == 404
    assert queued_unknown.json() == {"detail": "Path /nope not found"}

    openapi = client.get("/openapi.json")
    assert openapi.status_code == 200
    assert {"/", "/stream"} <= set(openapi.json()["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def test_runner_errors_pass_through(client: httpx.Client) -> None:
    invalid = client.post("/", json={"seconds": -1})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "seconds"]


def test_files_served_by_the_gateway(fleet: Fleet, client: httpx.Client) -> None:
    response = client.post(f"/local/{APP_NAME}/file", json={"text": "stored by a runner"})
    assert response.status_code == 200, response.text
    url = response.json()["file"]["url"]
    assert url.startswith(fleet.url("files/")), url
    stored = client.get(url)
    assert stored.status_code == 200
    assert stored.text == "stored by a runner"
    assert client.get("/files/no/such/file.txt").status_code == 404


# -- webhooks --------------------------------------------------------------------------------------


class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1 in a thread that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.redirects: list[str] = []
        self.received = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                if self.path == "/redirect":
                    receiver.redirects.append(body.get("request_id"))
                    self.send_response(307)
                    self.send_header("location", "/hook")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                with receiver.received:
                    receiver.bodies.append(body)
                    receiver.received.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, request_id: str, timeout: float = WAIT_S) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((b for b in self.bodies if b.get("request_id") == request_id), None)

        with self.received:
            if not self.received.wait_for(find, timeout):
                raise AssertionError(f"no webhook for {request_id} within {timeout} s")
            return find()  # type: ignore[return-value]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_webhook_delivered(client: httpx.Client, webhook_receiver: WebhookReceiver) -> None:
    url = f"/queue/local/{APP_NAME}"
    ok = client.post(url, params={"fal_webhook": webhook_receiver.url}, json={"tag": "hooked"})
    failed = client.post(url, params={"fal_webhook": webhook_receiver.url}, json={"seconds": -1})
    assert ok.status_code == failed.status_code == 200

    delivered = webhook_receiver.wait_for(ok.json()["request_id"])
    assert delivered["status"] == "OK"
    assert delivered["gateway_request_id"] == ok.json()["request_id"]
    assert delivered["payload"]["tag"] == "hooked"
    assert delivered["payload"]["request_id"] == ok.json()["request_id"]

    error = webhook_receiver.wait_for(failed.json()["request_id"])
    assert error["status"] == "ERROR"
    assert "422" in error["error"]
    assert error["payload"]["detail"][0]["loc"] == ["body", "seconds"]


@pytest.mark.parametrize(
    "hook",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "file:///etc/passwd",
    ],
)
def test_a_webhook_to_a_refused_address_is_refused_at_submit(
    client: httpx.Client, hook: str
) -> None:
    response = client.post(f"/queue/local/{APP_NAME}", params={"fal_webhook": hook}, json={})
    assert response.status_code == 400, response.text
    assert "fal_webhook" in response.json()["detail"]


def test_a_webhook_redirect_is_not_followed(
    client: httpx.Client, webhook_receiver: WebhookReceiver
) -> None:
    """The receiver answers 307 to its own /hook; the gateway does not follow it (it retries
    the first URL, then gives up)."""
    redirecting = webhook_receiver.url.replace("/hook", "/redirect")
    submitted = client.post(
        f"/queue/local/{APP_NAME}", params={"fal_webhook": redirecting}, json={"tag": "r"}
    )
    assert submitted.status_code == 200
    request_id = submitted.json()["request_id"]
    poll_until(
        lambda: webhook_receiver.redirects.count(request_id) >= 1, WAIT_S, "the first attempt"
    )
    assert not any(body.get("request_id") == request_id for body in webhook_receiver.bodies)


# -- what the proxy lets through ----------------------------------------------------------------

ONE_EACH = ("date", "server", "content-type", "content-length", "x-fal-request-id")
HOP_BY_HOP = ("connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection")


def assert_headers_once(response: httpx.Response) -> None:
    for name in ONE_EACH:
        assert len(response.headers.get_list(name)) <= 1, (name, response.headers.raw)
    assert len(response.headers.get_list("transfer-encoding")) <= 1, response.headers.raw
    for name in HOP_BY_HOP:
        assert name not in response.headers, (name, response.headers.raw)


def test_answers_carry_each_header_once(client: httpx.Client, fleet: Fleet) -> None:
    """The gateway's own ``date`` and ``server``, never the runner's as well (issue 12)."""
    response = client.post("/", json={"tag": "headers"})
    assert response.status_code == 200
    assert_headers_once(response)
    assert response.headers.get_list("date") and response.headers.get_list("server")
    with client.stream("POST", f"/local/{APP_NAME}/stream", json={"count": 2}) as streamed:
        streamed.read()
    assert_headers_once(streamed)
    handle = submit(client, {"tag": "queued-headers"})
    wait_status(client, handle, "COMPLETED", fleet)
    result = client.get(handle["response_url"])
    assert result.status_code == 200 and result.json()["tag"] == "queued-headers"
    assert_headers_once(result)


# -- streaming and websockets through the gateway --------------------------------------------------


def test_sse_pass_through(client: httpx.Client) -> None:
    with client.stream("POST", f"/local/{APP_NAME}/stream", json={"count": 4}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    assert [event["index"] for event in events] == [0, 1, 2, 3]
    assert len({event["runner_id"] for event in events}) == 1


def test_a_caller_leaving_a_stream_frees_its_runner(fleet: Fleet, client: httpx.Client) -> None:
    with client.stream("POST", f"/local/{APP_NAME}/ticks") as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert sse_events(line for line, _ in zip(lines, range(4), strict=False))
    # The stream would never end: the gateway stops it and gives the runner's slot back.
    wait_all_idle(fleet)


def test_websocket_and_realtime_pass_through(fleet: Fleet) -> None:
    for path in (f"local/{APP_NAME}/ws", "ws"):
        with connect(fleet.ws_base_url + path, open_timeout=WAIT_S) as websocket:
            websocket.send("hello")
            assert websocket.recv(timeout=WAIT_S) == "echo: hello"
            websocket.send("again")
            assert websocket.recv(timeout=WAIT_S) == "echo: again"

    with connect(fleet.ws_base_url + f"local/{APP_NAME}/realtime") as websocket:
        websocket.send(msgpack.packb({"prompt": "abc"}))
        output = msgpack.unpackb(websocket.recv(timeout=WAIT_S))
    assert output["text"] == "ABC"
    assert output["runner_id"].startswith("runner-")
    # The websocket's runner slot is given back once the session ends.
    wait_all_idle(fleet)


# -- observability ---------------------------------------------------------------------------------


def served_by_both(client: httpx.Client) -> None:
    """Make sure each runner served at least one HTTP request (its ``first_request`` phase)."""
    seen: set[str] = set()

    def pair() -> bool:
        with ThreadPoolExecutor(2) as pool:
            answers = pool.map(lambda _: client.post("/", json={"seconds": 0.3}), range(2))
            seen.update(answer.json()["runner_id"] for answer in answers)
        return seen == {"runner-0", "runner-1"}

    poll_until(pair, WAIT_S, "both runners to serve a request")


def test_metrics(fleet: Fleet, client: httpx.Client) -> None:
    served_by_both(client)
    response = client.get("/metrics")
    assert response.status_code == 200
    lines = response.text.splitlines()

    def samples(name: str) -> list[str]:
        return [line for line in lines if line.startswith(name)]

    assert samples("fal_app_requests_received")
    assert samples('fal_app_runners{state="IDLE"}') or samples('fal_app_runners{state="RUNNING"}')
    assert any(line.split()[-1] != "0.0" for line in samples("fal_app_runners{"))
    assert samples("fal_app_queue_size")
    assert samples("fal_app_requests_completed")
    assert samples("fal_app_request_latency")
    phases = samples("minifal_runner_startup_phase_seconds{")
    assert any('phase="setup"' in line and 'runner_id="runner-1"' in line for line in phases)


def test_startup_report_of_a_real_run(fleet: Fleet, client: httpx.Client, tmp_path: Path) -> None:
    served_by_both(client)
    report = run_minifal(
        "startup-report", "--data-dir", str(fleet.data_dir), "--json", cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    runners = {row["runner_id"]: row for row in data["runners"]}
    assert set(runners) == {"runner-0", "runner-1"}
    for row in runners.values():
        assert {"setup", "first_request"} <= set(row["phases"]), row["phases"].keys()
        assert row["ready_at_s"] is not None
    assert Path(data["timeline_png"]).is_file()
    assert Path(data["timeline_png"]).read_bytes().startswith(b"\x89PNG")

    table = run_minifal("startup-report", "--data-dir", str(fleet.data_dir), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "runner-0" in table.stdout and "runner-1" in table.stdout

    # Each runner's output: in its own log file next to its events, and prefixed on the console.
    run_dir = Path(data["path"])
    for runner_id in ("runner-0", "runner-1"):
        assert "Uvicorn running" in (run_dir / f"{runner_id}.log").read_text()
        assert f"[{runner_id}] " in fleet.log()


# -- auth ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with start_fleet(PRIVATE_APP, tmp_path_factory.mktemp("private")) as running:
        running.auth_key = logged_auth_key(running)
        yield running


def test_private_app_needs_key(private_fleet: Fleet, tmp_path: Path) -> None:
    key = private_fleet.auth_key
    with httpx.Client(base_url=private_fleet.base_url, timeout=WAIT_S) as anonymous:
        assert anonymous.get("/health").status_code == 200
        denied = anonymous.post("/", json={})
        assert denied.status_code == 401
        assert "detail" in denied.json()
        assert anonymous.post("/queue/local/private-fleet-app", json={}).status_code == 401
        assert anonymous.get("/runners").status_code == 401
        assert anonymous.get("/metrics").status_code == 401
        wrong = anonymous.post("/", json={}, headers={"Authorization": "Key not-the-key"})
        assert wrong.status_code == 401
        allowed = anonymous.post("/", json={}, headers={"Authorization": f"Key {key}"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["runner_id"].startswith("runner-")

    with pytest.raises(InvalidStatus) as refused_ws:
        connect(private_fleet.ws_base_url + "ws", open_timeout=WAIT_S)
    assert refused_ws.value.response.status_code == 403

    listed = run_minifal(
        "runners", "--url", private_fleet.base_url, f"--auth-key={key}", "--json", cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["runners"]) == 2
    refused = run_minifal("runners", "--url", private_fleet.base_url, cwd=tmp_path)
    assert refused.returncode == 1
    assert "401" in refused.stderr


# -- shutdown --------------------------------------------------------------------------------------


def test_sigterm_drains_and_leaves_no_orphan(tmp_path: Path) -> None:
    with start_fleet(FLEET_APP, tmp_path, wait_for_runners=False) as own:
        # The gateway answers at once; a request sent before any runner is ready waits for one.
        with own.client() as http:
            early = http.post("/", json={"tag": "early"})
        assert early.status_code == 200, early.text
        assert early.json()["tag"] == "early"
        wait_all_idle(own)
        assert own.health()["runners_ready"] == 2
        runners = own.runners()
        pids = [runner["pid"] for runner in runners]
        assert len(pids) == 2 and all(not pid_is_gone(pid) for pid in pids)

        with ThreadPoolExecutor(1) as pool, own.client() as http:
            in_flight = pool.submit(http.post, "/", json={"seconds": 1.5, "tag": "drained"})
            poll_until(
                lambda: any(r["in_flight_requests"] for r in own.runners()),
                WAIT_S,
                "the request to reach a runner",
                own,
            )
            code = own.stop()
            answer = in_flight.result(timeout=WAIT_S)

    assert code == 0, own.log()[-4000:]
    assert answer.status_code == 200 and answer.json()["tag"] == "drained"
    poll_until(lambda: all(pid_is_gone(pid) for pid in pids), 10.0, "runner pids to be gone")
    for runner in runners:
        marker = own.data_dir / f"teardown-{runner['runner_id']}"
        assert marker.is_file(), f"teardown() did not run in {runner['runner_id']}"
        assert marker.read_text() == str(runner["pid"])


def test_runners_stop_when_the_gateway_is_killed(tmp_path: Path) -> None:
    """Even a SIGKILLed gateway leaves no runner behind: each gets SIGTERM and tears down."""
    with start_fleet(FLEET_APP, tmp_path) as own:
        runners = own.runners()
        own.process.kill()
        own.process.wait(WAIT_S)
        pids = [runner["pid"] for runner in runners]
        poll_until(lambda: all(pid_is_gone(pid) for pid in pids), WAIT_S, "runners to exit", own)
    for runner in runners:
        assert (own.data_dir / f"teardown-{runner['runner_id']}").is_file()


# -- fal_client against the TLS gateway ------------------------------------------------------------

FAL_CLIENT_SCRIPT = """
import json
import fal_client

app = "local/fleet-app"
out = {"run": fal_client.run(app, arguments={"tag": "run"})}
handle = fal_client.submit(app, arguments={"tag": "submit", "seconds": 0.5})
out["request_id"] = handle.request_id
out["first_status"] = type(handle.status()).__name__
out["get"] = handle.get()
final = handle.status(with_logs=True)
out["final_status"] = type(final).__name__
out["metrics"] = final.metrics
out["stream"] = list(fal_client.stream(app, arguments={"count": 3}, path="/stream"))
# use_jwt=False: the default asks rest.fal.ai for a token (a fixed URL no variable redirects).
with fal_client.realtime(app, use_jwt=False) as connection:
    connection.send({"prompt": "abc"})
    out["realtime"] = connection.recv()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    files = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key")}
    authority.cert_pem.write_to_path(str(files["ca"]))
    certificate.private_key_pem.write_to_path(str(files["key"]))
    certificate.cert_chain_pems[0].write_to_path(str(files["cert"]))
    for extra in certificate.cert_chain_pems[1:]:
        extra.write_to_path(str(files["cert"]), append=True)
    return files


def test_fal_client_against_tls_gateway(tls_files: dict[str, Path], tmp_path: Path) -> None:
    """fal's own client, unchanged, pointed at the gateway by its environment variables.

    The gateway also wants a key here: fal_client sends ``FAL_KEY`` as ``Authorization: Key``.
    """
    key = "fal-client-key"
    tls_args = ("--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"]))
    tls_args += ("--auth-key", key)
    verify = ssl.create_default_context(cafile=str(tls_files["ca"]))
    with start_fleet(
        FLEET_APP, tmp_path, workers=1, extra_args=tls_args, verify=verify, auth_key=key
    ) as tls:
        with tls.client() as http:
            assert (
                http.post("/", json={}, headers={"Authorization": "Key other"}).status_code == 401
            )
        host = f"127.0.0.1:{tls.port}"
        env = clean_env() | {
            "FAL_KEY": key,
            "FAL_RUN_HOST": host,
            "FAL_QUEUE_RUN_HOST": f"{host}/queue",
            "SSL_CERT_FILE": str(tls_files["ca"]),
        }
        started = time.monotonic()
        child = subprocess.run(
            [sys.executable, "-c", FAL_CLIENT_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, (
            f"fal_client failed after {time.monotonic() - started:.1f} s:\n{child.stderr}\n"
            + tls.log()[-4000:]
        )
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["run"]["tag"] == "run" and out["run"]["runner_id"] == "runner-0"
    assert out["first_status"] in ("Queued", "InProgress", "Completed")
    assert out["get"]["tag"] == "submit"
    assert out["get"]["request_id"] == out["request_id"]
    assert out["final_status"] == "Completed"
    assert out["metrics"]["inference_time"] >= 0
    assert [event["index"] for event in out["stream"]] == [0, 1, 2]
    assert out["realtime"] == {"text": "ABC", "runner_id": "runner-0"}


def test_a_setup_that_fails_at_once_is_logged_as_a_failed_setup(tmp_path: Path) -> None:
    """Not as a startup_timeout: the log says what happened, at once."""
    app = Path(__file__).parent / "apps" / "setup_fails_thread_app.py"
    with start_fleet(app, tmp_path, workers=1, wait_for_runners=False) as fleet:
        poll_until(lambda: "failed (setup() failed" in fleet.log(), 60, "the failure", fleet)
        assert "startup_timeout" not in fleet.log()
