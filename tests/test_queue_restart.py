"""The durable queue with real processes: a gateway killed (``kill -9``) or stopped (SIGTERM)
with a full queue, then started again on the same data dir, answers every request it accepted,
each with its own result; the same through ``fal_client``; two gateways on one Redis, one of
them killed during a burst; a store that cannot take a request answers 503.

A request's own result: the fleet app answers the request id its runner saw and the caller's tag.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from conftest import clean_env
from fleet_support import APPS_FLEET_DIR, Fleet, FleetError, poll_until, start_fleet
from redis_support import redis_server

pytestmark = pytest.mark.process

FLEET_APP = APPS_FLEET_DIR / "fleet_app.py"
QUEUE = "/queue/local/fleet-app"
ANSWER_TIMEOUT_S = 90.0
POLL_S = 0.2


class WebhookReceiver:
    """A loopback HTTP server that records the webhooks it gets: (request id, status, tag)."""

    def __init__(self) -> None:
        received: list[tuple[str, str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                payload = body.get("payload") or {}
                received.append((body["request_id"], body["status"], payload.get("tag", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def submit(
    client: httpx.Client, count: int, seconds: float, prefix: str, webhook: str | None = None
) -> dict[str, str]:
    """``count`` queue requests; their ids and the tag each carries."""
    accepted = {}
    params = {"fal_webhook": webhook} if webhook else {}
    for index in range(count):
        tag = f"{prefix}-{index}"
        response = client.post(QUEUE, params=params, json={"seconds": seconds, "tag": tag})
        assert response.status_code == 200, response.text
        accepted[response.json()["request_id"]] = tag
    return accepted


def wait_answered(
    base_url: str, tags: dict[str, str], seen: dict[str, bytes] | None = None
) -> dict[str, bytes]:
    """Poll every request until it is answered; its result as first read (``seen`` keeps
    results read earlier). A request the gateway does not know fails the test at once."""
    results = dict(seen or {})
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while True:
            for request_id in [i for i in tags if i not in results]:
                status = client.get(f"{QUEUE}/requests/{request_id}/status")
                assert status.status_code in (200, 202), (request_id, status.text)
                if status.json()["status"] == "COMPLETED":
                    results[request_id] = client.get(f"{QUEUE}/requests/{request_id}").content
            if len(results) == len(tags):
                return results
            if time.monotonic() > deadline:
                raise FleetError(f"{len(tags) - len(results)} request(s) never answered")
            time.sleep(POLL_S)  # back-off of a bounded poll


def assert_own_results(base_url: str, tags: dict[str, str], results: dict[str, bytes]) -> None:
    """Each answer is the request's own (its id, its tag), a success, and the one the caller
    read first is the one it reads now: no request was answered twice."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for request_id, tag in tags.items():
            answer = json.loads(results[request_id])
            assert answer["request_id"] == request_id and answer["tag"] == tag, answer
            again = client.get(f"{QUEUE}/requests/{request_id}")
            assert again.status_code == 200 and again.content == results[request_id]


def busy(fleet: Fleet) -> tuple[int, int]:
    """(requests waiting, requests on runners) now."""
    return fleet.health()["queue_size"], sum(r["in_flight_requests"] for r in fleet.runners())


def restart(fleet: Fleet, work_dir: Path, name: str, *extra: str) -> Any:
    return start_fleet(
        FLEET_APP,
        work_dir,
        workers=3,
        port=fleet.port,
        data_dir=fleet.data_dir,
        log_name=f"{name}.log",
        extra_args=extra,
    )


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_restarted_gateway_answers_every_request_it_accepted(stop: str, tmp_path: Path) -> None:
    """And sends every webhook: those of requests answered before the stop were sent then, the
    others after the restart. A webhook is sent once, but for a request whose delivery the
    kill cut short before it was recorded (at most the few answered in the kill's moment)."""
    receiver = WebhookReceiver()
    try:
        with start_fleet(FLEET_APP, tmp_path, workers=3) as first:
            with first.client() as client:
                # 3 long requests hold the 3 runners while the others queue up behind them.
                tags = submit(client, 3, 5.0, "long", receiver.url)
                tags |= submit(client, 90, 0.1, "r", receiver.url)
            waiting, running = busy(first)
            assert waiting >= 75 and running >= 3, (waiting, running)
            if stop == "kill -9":
                first.process.kill()
                first.process.wait(10)
            else:
                assert first.stop() == 0
                assert "stay queued in the job store" in first.log()
        with restart(first, tmp_path, "restarted") as second:
            results = wait_answered(second.base_url, tags)
            assert_own_results(second.base_url, tags, results)
            assert "took up" in second.log()
            some_id = next(iter(tags))
            with second.client() as client:
                stream = client.get(f"{QUEUE}/requests/{some_id}/status/stream")
                assert '"status": "COMPLETED"' in stream.text.strip().splitlines()[-1]
                cancel = client.put(f"{QUEUE}/requests/{some_id}/cancel")
                assert cancel.status_code == 400, cancel.text  # answered already
            poll_until(
                lambda: set(tags) <= {hook[0] for hook in receiver.received},
                ANSWER_TIMEOUT_S,
                "every webhook",
                second,
            )
    finally:
        receiver.close()
    assert {(rid, status, tag) for rid, status, tag in receiver.received} == {
        (rid, "OK", tag) for rid, tag in tags.items()
    }
    repeated = len(receiver.received) - len(tags)
    assert repeated == 0 if stop == "SIGTERM" else repeated <= 3, receiver.received


FAL_CLIENT_SUBMIT = """
import json, fal_client
handles = [fal_client.submit("local/fleet-app", arguments={"seconds": 0.3, "tag": f"c{i}"})
           for i in range(20)]
print(json.dumps({h.request_id: f"c{i}" for i, h in enumerate(handles)}))
"""
FAL_CLIENT_RESULTS = """
import json, sys, fal_client
tags = json.loads(sys.argv[1])
out = {}
for request_id in tags:
    status = fal_client.status("local/fleet-app", request_id)
    out[request_id] = {"status": type(status).__name__,
                       "result": fal_client.result("local/fleet-app", request_id)}
print(json.dumps(out))
"""


def test_fal_client_submit_status_result_across_a_kill(tmp_path: Path) -> None:
    """fal's own client (it speaks HTTPS only): submit, the gateway is killed, then status and
    result of every handle from the gateway started again on the same port and data dir."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    authority.cert_pem.write_to_path(str(ca))
    certificate.private_key_pem.write_to_path(str(key))
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--auth-key", "k")
    verify = ssl.create_default_context(cafile=str(ca))

    def fal_client(script: str, port: int, *args: str) -> Any:
        host = f"127.0.0.1:{port}"
        env = clean_env() | {
            "FAL_KEY": "k",
            "FAL_RUN_HOST": host,
            "FAL_QUEUE_RUN_HOST": f"{host}/queue",
            "SSL_CERT_FILE": str(ca),
        }
        child = subprocess.run(
            [sys.executable, "-c", script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr
        return json.loads(child.stdout.strip().splitlines()[-1])

    with start_fleet(
        FLEET_APP, tmp_path, workers=1, extra_args=tls, verify=verify, auth_key="k"
    ) as first:
        tags = fal_client(FAL_CLIENT_SUBMIT, first.port)
        first.process.kill()
        first.process.wait(10)
    with start_fleet(
        FLEET_APP,
        tmp_path,
        workers=1,
        extra_args=tls,
        verify=verify,
        auth_key="k",
        port=first.port,
        data_dir=first.data_dir,
        log_name="restarted.log",
    ):
        answers = fal_client(FAL_CLIENT_RESULTS, first.port, json.dumps(tags))
    assert set(answers) == set(tags)
    for request_id, answer in answers.items():
        assert answer["status"] in ("Queued", "InProgress", "Completed")
        assert answer["result"]["tag"] == tags[request_id]
        assert answer["result"]["request_id"] == request_id


def test_two_gateways_on_redis_one_killed_during_a_burst(tmp_path: Path) -> None:
    """A load balancer's view: submits alternate between two gateways, the next one when a
    gateway refuses the connection; one is ``kill -9``'d halfway through 150 submits. The other
    takes its requests over once its lease (3 s here) expires."""
    with redis_server(tmp_path) as (url, _):
        store = ("--queue-store", f"{url}?lease=3")
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with (
            start_fleet(FLEET_APP, tmp_path / "a", workers=2, extra_args=store) as a,
            start_fleet(FLEET_APP, tmp_path / "b", workers=2, extra_args=store) as b,
        ):
            tags: dict[str, str] = {}
            clients = [httpx.Client(base_url=f.base_url, timeout=30) for f in (a, b)]
            try:
                for index in range(150):
                    if index == 75:
                        a.process.kill()
                        a.process.wait(10)
                    for client in (clients[index % 2], clients[(index + 1) % 2]):
                        try:
                            response = client.post(
                                QUEUE, json={"seconds": 0.05, "tag": f"burst-{index}"}
                            )
                        except httpx.TransportError:
                            continue  # the balancer tries the other gateway
                        assert response.status_code == 200, response.text
                        tags[response.json()["request_id"]] = f"burst-{index}"
                        break
            finally:
                for client in clients:
                    client.close()
            assert len(tags) == 150
            results = wait_answered(b.base_url, tags)
            assert_own_results(b.base_url, tags, results)
            assert "took up" in b.log()


def test_a_store_that_cannot_take_a_request_answers_503(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (url, server):
        store = ("--queue-store", url)
        fleet = start_fleet(FLEET_APP, tmp_path, workers=1, extra_args=store)
        with fleet as running, running.client() as client:
            assert client.post(QUEUE, json={"tag": "kept"}).status_code == 200
            server.send_signal(signal.SIGTERM)
            server.wait(10)
            refused = client.post(QUEUE, json={"tag": "refused"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert client.post("/", json={"tag": "sync"}).status_code == 200
