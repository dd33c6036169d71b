"""``minifal run`` under changing load and failures (issue 6): real gateway, real runners, HTTP.

Scale from zero and back after ``keep_alive``, ``kill -9`` of a busy runner during a burst of
queued requests (none lost, none answered twice), ``startup_timeout``, a ``setup()`` that raises,
health checks, ``request_timeout`` and the bounded queue. Every wait is a bounded poll; nothing
asserts how long anything took beyond those bounds.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet_support import Fleet, pid_is_gone, poll_until, start_fleet

pytestmark = pytest.mark.process

APPS_DIR = Path(__file__).parent / "apps_scaling"
SCALING_APP = APPS_DIR / "scaling_app.py"
APP_NAME = "scaling-app"
KEEP_ALIVE_S = 5.0  # scaling_app.py's keep_alive
MAX_CONCURRENCY = 2  # scaling_app.py's max_concurrency
BURST = 8
WAIT_S = 60.0
FAST_BACKOFF = {"MINIFAL_FAILURE_BACKOFF_SECONDS": "0.5"}


def live(runners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [runner for runner in runners if runner["state"] != "TERMINATED"]


def states(runner: dict[str, Any]) -> list[str]:
    return [change["state"] for change in runner["state_history"]]


def in_order(history: list[str], expected: list[str]) -> bool:
    """``expected`` appears in ``history`` as a subsequence (other states may come between)."""
    remaining = iter(history)
    return all(state in remaining for state in expected)


def runner_named(fleet: Fleet, runner_id: str) -> dict[str, Any]:
    return next(r for r in fleet.runners() if r["runner_id"] == runner_id)


def submit(
    client: httpx.Client, body: dict[str, Any], app: str = APP_NAME, **params: str
) -> dict[str, Any]:
    response = client.post(f"/queue/local/{app}", json=body, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def status_of(client: httpx.Client, handle: dict[str, Any]) -> str:
    return client.get(handle["status_url"]).json()["status"]


class WebhookReceiver:
    """Records the JSON bodies POSTed to it, from a thread (fal's ``fal_webhook``)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


# -- the "done when": 0 -> 2 -> 0 through a kill -9 --------------------------------------


def test_burst_scales_up_survives_kill_9_and_scales_to_zero(
    tmp_path: Path, webhooks: WebhookReceiver
) -> None:
    with (
        start_fleet(SCALING_APP, tmp_path, workers=None, env=FAST_BACKOFF) as fleet,
        fleet.client() as client,
    ):
        assert live(fleet.runners()) == [], "min_concurrency=0: no runner before any request"
        handles = [submit(client, {"seconds": 1.0}, fal_webhook=webhooks.url) for _ in range(BURST)]
        pending = list(handles)
        most_live = 0
        killed: dict[str, Any] | None = None
        killed_exit_reason: str | None = None

        def burst_answered() -> bool:
            nonlocal most_live, killed, killed_exit_reason
            runners = fleet.runners()
            most_live = max(most_live, len(live(runners)))
            if killed is None:
                busy = [r for r in runners if r["state"] == "RUNNING" and r["in_flight_requests"]]
                if busy:
                    killed = busy[0]
                    os.kill(killed["pid"], signal.SIGKILL)
            elif killed_exit_reason is None:
                now = next(r for r in runners if r["runner_id"] == killed["runner_id"])
                killed_exit_reason = now["last_exit_reason"]
            while pending and status_of(client, pending[0]) == "COMPLETED":
                pending.pop(0)  # one status request per poll while the head is unanswered
            return killed_exit_reason is not None and not pending

        poll_until(burst_answered, 90.0, "the burst answered after a kill -9", fleet)
        assert killed is not None and killed_exit_reason is not None
        assert most_live == MAX_CONCURRENCY, f"scaled to {most_live} runners, not 0 -> 2"
        assert "signal 9" in killed_exit_reason or "lost connection" in killed_exit_reason

        # Every request answered, once, with a success; none by the killed process.
        results = []
        for handle in handles:
            response = client.get(handle["response_url"])
            assert response.status_code == 200, response.text
            results.append(response.json())
        assert [r["request_id"] for r in results] == [h["request_id"] for h in handles]
        assert killed["pid"] not in {r["pid"] for r in results}
        submitted = Counter(h["request_id"] for h in handles)
        assert len(submitted) == BURST
        completed = Counter(line.split()[0] for line in read_lines(fleet, "completed.log"))
        assert completed == submitted, "each request ran to completion exactly once"
        # Only the request on the killed runner may have started twice (max_multiplexing=1).
        assert BURST <= len(read_lines(fleet, "started.log")) <= BURST + 1

        # keep_alive: back to zero live runners, never above max_concurrency on the way.
        def scaled_to_zero() -> list[dict[str, Any]] | None:
            nonlocal most_live
            runners = fleet.runners()
            most_live = max(most_live, len(live(runners)))
            return runners if not live(runners) else None

        runners = poll_until(scaled_to_zero, KEEP_ALIVE_S + 30.0, "scale-down to zero", fleet)
        assert most_live == MAX_CONCURRENCY
        assert {r["runner_id"] for r in runners} >= {killed["runner_id"]}
        for runner in runners:
            history = states(runner)
            assert in_order(history, ["SETUP", "IDLE", "RUNNING", "IDLE", "TERMINATED"]), history
            assert history[-1] == "TERMINATED"
            assert "keep_alive" in (runner["last_exit_reason"] or ""), runner
        killed_history = states(next(r for r in runners if r["runner_id"] == killed["runner_id"]))
        restarted = killed_history.count("SETUP") >= 2 or "FAILURE_DELAY" in killed_history
        assert restarted, killed_history

        # Webhooks: one per request, after all the churn above.
        poll_until(lambda: len(webhooks.bodies) >= BURST, WAIT_S, "the webhooks", fleet)
        delivered = Counter(body["request_id"] for body in webhooks.bodies)
        assert delivered == submitted
        assert {body["status"] for body in webhooks.bodies} == {"OK"}


def read_lines(fleet: Fleet, name: str) -> list[str]:
    return (fleet.data_dir / name).read_text().splitlines()


def test_sync_call_scales_from_zero_and_expires_in_counts_down(tmp_path: Path) -> None:
    with (
        start_fleet(SCALING_APP, tmp_path, workers=None) as fleet,
        fleet.client(timeout=WAIT_S) as client,
    ):
        assert live(fleet.runners()) == []
        response = client.post("/", json={"seconds": 0})  # waits while a runner starts
        assert response.status_code == 200, response.text
        runner_id = response.json()["runner_id"]

        def expiry() -> float | None:
            runner = runner_named(fleet, runner_id)
            return runner["expires_in"] if runner["state"] == "IDLE" else None

        first = poll_until(expiry, WAIT_S, "expires_in while IDLE", fleet)
        later = poll_until(
            lambda: (value := expiry()) is not None and value < first and value,
            KEEP_ALIVE_S,
            "expires_in to count down",
            fleet,
        )
        assert 0 < later < first <= KEEP_ALIVE_S

        poll_until(lambda: not live(fleet.runners()), KEEP_ALIVE_S + 30.0, "scale to zero", fleet)
        runner = runner_named(fleet, runner_id)
        assert "keep_alive" in runner["last_exit_reason"]
        assert pid_is_gone(runner["pid"])


# -- failed starts ------------------------------------------------------------------------------


def test_startup_timeout_kills_and_restarts_after_back_off(tmp_path: Path) -> None:
    app = APPS_DIR / "slow_setup_app.py"
    with start_fleet(app, tmp_path, workers=1, wait_for_runners=False, env=FAST_BACKOFF) as fleet:

        def restarted() -> dict[str, Any] | None:
            runner = runner_named(fleet, "runner-0")
            return runner if states(runner).count("SETUP") >= 2 else None

        runner = poll_until(restarted, WAIT_S, "a second start after startup_timeout", fleet)
        assert in_order(states(runner), ["SETUP", "FAILURE_DELAY", "SETUP"]), states(runner)
        assert "startup_timeout" in runner["last_exit_reason"], runner
        assert runner["state"] in ("SETUP", "FAILURE_DELAY"), runner


def test_setup_that_raises_is_a_failure_with_its_traceback_logged(tmp_path: Path) -> None:
    app = APPS_DIR / "broken_setup_app.py"
    with start_fleet(app, tmp_path, workers=1, wait_for_runners=False) as fleet:

        def delayed() -> dict[str, Any] | None:
            runner = runner_named(fleet, "runner-0")
            return runner if runner["state"] == "FAILURE_DELAY" else None

        runner = poll_until(delayed, WAIT_S, "FAILURE_DELAY after setup() raised", fleet)
        assert "setup()" in runner["last_exit_reason"], runner
        assert states(runner)[:2] == ["PENDING", "SETUP"], states(runner)
        log = (fleet.data_dir / "runs" / client_run_id(fleet) / "runner-0.log").read_text()
        assert "Traceback" in log
        assert "RuntimeError: weights file is missing: model-v7.safetensors" in log


def client_run_id(fleet: Fleet) -> str:
    with fleet.client() as client:
        return client.get("/runners").json()["run_id"]


# -- health checks and request_timeout ----------------------------------------------------------


def test_failing_health_check_replaces_the_runner(tmp_path: Path) -> None:
    app = APPS_DIR / "health_app.py"
    env = {"MINIFAL_HEALTH_CHECK_INTERVAL": "0.5"}
    with start_fleet(app, tmp_path, workers=1, env=env) as fleet, fleet.client() as client:
        old_pid = runner_named(fleet, "runner-0")["pid"]
        (fleet.data_dir / "unhealthy").write_text(str(old_pid))

        def replaced() -> dict[str, Any] | None:
            runner = runner_named(fleet, "runner-0")
            return runner if runner["pid"] != old_pid and runner["state"] == "IDLE" else None

        runner = poll_until(replaced, WAIT_S, "the unhealthy runner replaced", fleet)
        assert "health check" in runner["last_exit_reason"], runner
        assert in_order(states(runner), ["IDLE", "SETUP", "IDLE"]), states(runner)
        assert "FAILURE_DELAY" not in states(runner), "a replacement is not a crash back-off"
        assert pid_is_gone(old_pid)
        response = client.post("/", json={})
        assert response.status_code == 200
        assert response.json()["pid"] == runner["pid"]


def test_request_timeout_answers_504_and_replaces_the_runner(tmp_path: Path) -> None:
    app = APPS_DIR / "timeout_app.py"
    with start_fleet(app, tmp_path, workers=1) as fleet, fleet.client(timeout=9.0) as client:
        old_pid = runner_named(fleet, "runner-0")["pid"]
        # The client gives up before the endpoint's 10 s sleep: the 504 comes from the timeout.
        response = client.post("/", json={"seconds": 10})
        assert response.status_code == 504, response.text
        assert "request_timeout" in response.json()["detail"]

        def replaced(previous: int) -> dict[str, Any] | None:
            runner = runner_named(fleet, "runner-0")
            return runner if runner["pid"] != previous and runner["state"] == "IDLE" else None

        runner = poll_until(lambda: replaced(old_pid), WAIT_S, "a new runner", fleet)
        assert "request_timeout" in runner["last_exit_reason"], runner
        assert pid_is_gone(old_pid)

        # A queue request over request_timeout is retried on the fresh runner (and succeeds there,
        # as its second attempt is fast). Exhausting all 10 attempts would take minutes: not run.
        handle = submit(client, {"seconds": 10, "slow_once": True}, app="timeout-app")
        poll_until(
            lambda: status_of(client, handle) == "COMPLETED", WAIT_S, "the retried request", fleet
        )
        result = client.get(handle["response_url"])
        assert result.status_code == 200, result.text
        assert result.json()["attempt"] == 2
        attempts = (fleet.data_dir / f"attempts-{handle['request_id']}").read_text().split()
        assert len(attempts) == 2 and attempts[0] != attempts[1], "two attempts, two processes"
        assert result.json()["pid"] == int(attempts[1])


# -- back-pressure ------------------------------------------------------------------------------


def test_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    with (
        start_fleet(SCALING_APP, tmp_path, workers=1, extra_args=("--max-queue", "2")) as fleet,
        fleet.client() as client,
    ):
        busy = submit(client, {"seconds": 3})
        poll_until(lambda: status_of(client, busy) == "IN_PROGRESS", WAIT_S, "busy", fleet)
        waiting = [submit(client, {"seconds": 0}) for _ in range(2)]

        refused = client.post(f"/queue/local/{APP_NAME}", json={"seconds": 0})
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "queue is full" in refused.json()["detail"]
        assert client.post("/", json={"seconds": 0}).status_code == 429, "sync calls share it"

        for handle in [busy, *waiting]:
            poll_until(
                lambda h=handle: status_of(client, h) == "COMPLETED", WAIT_S, "drained", fleet
            )
            assert client.get(handle["response_url"]).status_code == 200
        submit(client, {"seconds": 0})  # room again
