"""Per-request logs through a real ``minifal run`` (one runner, ``max_multiplexing = 2``): fal's
own client prints each request's lines, two requests at once keep their lines apart, and the
lines of ``setup()`` belong to no request but to the runner's log.

fal_client wants HTTPS: the gateway runs with a test certificate (trustme) and a key, as in
``test_fleet.py``'s fal_client test. Waits are bounded; nothing asserts how long anything took.
A queue request's lines are stored with its answer: a gateway ``kill -9``'d and started again
on the same data dir still shows them.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from conftest import clean_env
from fleet_support import APPS_FLEET_DIR, Fleet, poll_until, start_fleet

pytestmark = pytest.mark.process

LOGS_APP = APPS_FLEET_DIR / "logs_app.py"
KEY = "logs-key"
ROUNDS = 4
FAL_FIELDS = {"message", "level", "source", "timestamp"}

SUBSCRIBE_SCRIPT = """
import json, sys, threading
import fal_client

rounds = int(sys.argv[1])
out = {}
printing = threading.Lock()  # two subscribers print: one line at a time

def subscribe(tag):
    seen = []
    def on_queue_update(status):
        # fal's status carries every line so far: print the new ones, as a user would.
        if isinstance(status, (fal_client.InProgress, fal_client.Completed)) and status.logs:
            for log in status.logs[len(seen):]:
                with printing:
                    print(f"{tag}| {log['message']}", flush=True)
                seen.append(log)
    result = fal_client.subscribe(
        "local/logs-app",
        arguments={"tag": tag, "lines": rounds, "pause": 0.05, "meet": True},
        with_logs=True,
        on_queue_update=on_queue_update,
        interval=0.05,
    )
    out[tag] = {"result": result, "logs": seen}

threads = [threading.Thread(target=subscribe, args=(tag,)) for tag in ("A", "B")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("RESULT " + json.dumps(out))
"""


FAL_CLIENT_STATUS_SCRIPT = """
import json, sys
import fal_client

status = fal_client.status("local/logs-app", sys.argv[1], with_logs=True)
print("RESULT " + json.dumps({"status": type(status).__name__, "logs": status.logs}))
"""


def expected_messages(tag: str, rounds: int) -> set[str]:
    kinds = ("logged", "printed", "stderr", "thread")
    return {f"{tag} {kind} {index}" for kind in kinds for index in range(rounds)} | {
        f"{tag} pool task"
    }


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
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


def start_logs_fleet(work_dir: Path, tls: dict[str, Path], **restart: Any) -> Iterator[Fleet]:
    """The logs app behind an HTTPS gateway with a key; ``restart``: ``start_fleet``'s
    ``port``, ``data_dir`` and ``log_name`` of an earlier one."""
    arguments = ("--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"]), "--auth-key", KEY)
    verify = ssl.create_default_context(cafile=str(tls["ca"]))
    return start_fleet(  # type: ignore[no-any-return]
        LOGS_APP, work_dir, workers=1, extra_args=arguments, verify=verify, auth_key=KEY, **restart
    )


def fal_client_env(port: int, tls: dict[str, Path]) -> dict[str, str]:
    host = f"127.0.0.1:{port}"
    return clean_env() | {
        "FAL_KEY": KEY,
        "FAL_RUN_HOST": host,
        "FAL_QUEUE_RUN_HOST": f"{host}/queue",
        "SSL_CERT_FILE": str(tls["ca"]),
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tls: dict[str, Path]) -> Iterator[Fleet]:
    with start_logs_fleet(tmp_path_factory.mktemp("logs-fleet"), tls) as running:
        yield running


@pytest.fixture(scope="module")
def client(fleet: Fleet) -> Iterator[httpx.Client]:
    with fleet.client() as http:
        yield http


def test_fal_client_subscribe_prints_each_requests_own_lines(
    fleet: Fleet, tls: dict[str, Path]
) -> None:
    """Two requests at once on one runner (they meet after their first round), each logging
    with ``logging``, ``print`` to stdout and stderr, from a thread it starts and from an
    executor task: fal_client's ``on_queue_update`` sees exactly its own request's lines."""
    child = subprocess.run(
        [sys.executable, "-c", SUBSCRIBE_SCRIPT, str(ROUNDS)],
        env=fal_client_env(fleet.port, tls),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr + fleet.log()[-4000:]
    printed = [line for line in child.stdout.splitlines() if not line.startswith("RESULT ")]
    out = json.loads(child.stdout.splitlines()[-1].removeprefix("RESULT "))
    for tag in ("A", "B"):
        logs = out[tag]["logs"]
        messages = [log["message"] for log in logs]
        assert set(messages) == expected_messages(tag, ROUNDS), messages
        assert len(messages) == len(set(messages))  # each line once
        assert {line.split("| ", 1)[1] for line in printed if line.startswith(f"{tag}| ")} == set(
            messages
        )
        assert all(set(log) == FAL_FIELDS and log["source"] == "USER" for log in logs)
        levels = {log["message"].split()[1]: log["level"] for log in logs}
        assert levels == {
            "logged": "INFO",
            "printed": "STDOUT",
            "stderr": "STDERR",
            "thread": "STDOUT",
            "pool": "WARNING",
        }
    # They ran at once: each request's lines began before the other's ended.
    span = {tag: sorted(log["timestamp"] for log in out[tag]["logs"]) for tag in ("A", "B")}
    assert span["A"][0] < span["B"][-1] and span["B"][0] < span["A"][-1]


def test_setup_lines_are_the_runners_not_a_requests(fleet: Fleet, client: httpx.Client) -> None:
    answer = client.post("/", json={"tag": "S", "lines": 1})
    request_id = answer.json()["request_id"]
    logs = client.get(f"/requests/{request_id}/logs").json()["logs"]
    assert not any("setup:" in log["message"] for log in logs)
    runner_log = next((fleet.data_dir / "runs").glob("*/runner-0.log")).read_text()
    assert "setup: logged before any request" in runner_log
    assert "setup: printed before any request" in runner_log
    # the request's lines are in the runner's log too, readable, with the request's id
    poll_until(
        lambda: (
            f"[{request_id}] S printed 0"
            in next((fleet.data_dir / "runs").glob("*/runner-0.log")).read_text()
        ),
        30,
        "the request's line in the runner's log",
        fleet,
    )


def test_a_sync_requests_logs_by_the_id_of_its_answer(client: httpx.Client) -> None:
    answer = client.post("/async", json={"tag": "Y", "lines": 2})
    assert answer.status_code == 200
    assert "x-minifal-log-lines" not in answer.headers  # the gateway's, never passed on
    request_id = answer.headers["x-fal-request-id"]

    def lines() -> list[str]:
        body = client.get(f"/requests/{request_id}/logs").json()
        return [log["message"] for log in body["logs"]]

    expected = ["Y async logged 0", "Y async printed 0", "Y async logged 1", "Y async printed 1"]
    poll_until(lambda: lines() == expected, 30, "the sync request's lines")
    assert client.get("/requests/no-such-request/logs").status_code == 404


def test_status_and_its_stream_with_logs(client: httpx.Client) -> None:
    """``status?logs=1`` has every line so far; the stream sends each line once, as it comes."""
    submitted = client.post("/queue/local/logs-app", json={"tag": "Z", "lines": 10, "pause": 0.1})
    request_id = submitted.json()["request_id"]
    base = f"/queue/local/logs-app/requests/{request_id}"
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"{base}/status/stream", params={"logs": "1"}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    assert events[-1]["status"] == "COMPLETED"
    streamed = [log["message"] for event in events for log in event.get("logs") or ()]
    status = client.get(f"{base}/status", params={"logs": "1"}).json()
    assert [log["message"] for log in status["logs"]] == streamed
    assert set(streamed) == expected_messages("Z", 10)
    assert sum(1 for event in events if event.get("logs")) > 1  # lines came while it ran
    assert client.get(f"{base}/status").json().get("logs") is None  # no ?logs=1: none


def test_a_queue_requests_lines_outlive_a_killed_gateway(
    tmp_path: Path, tls: dict[str, Path]
) -> None:
    """Stored with the answer: the gateway started again on the same data dir (``kill -9``
    left it nothing in memory) answers ``status?logs=1``, the stream and fal_client's
    ``status(with_logs=True)`` with the same lines, in fal's fields."""
    with start_logs_fleet(tmp_path, tls) as first, first.client() as client:
        submitted = client.post("/queue/local/logs-app", json={"tag": "K", "lines": 2})
        request_id = submitted.json()["request_id"]
        base = f"/queue/local/logs-app/requests/{request_id}"

        def answered() -> bool:
            return client.get(f"{base}/status").json()["status"] == "COMPLETED"

        poll_until(answered, 30, "the queue request's answer", first)
        before = client.get(f"{base}/status", params={"logs": "1"}).json()["logs"]
        first.process.kill()
        first.process.wait(10)
    assert {log["message"] for log in before} == expected_messages("K", 2)
    restart = {"port": first.port, "data_dir": first.data_dir, "log_name": "restarted.log"}
    with start_logs_fleet(tmp_path, tls, **restart) as second, second.client() as client:
        status = client.get(f"{base}/status", params={"logs": "1"}).json()
        assert status["status"] == "COMPLETED" and status["logs"] == before
        assert all(set(log) == FAL_FIELDS and log["source"] == "USER" for log in before)
        stream = client.get(f"{base}/status/stream", params={"logs": "1"}).text
        events = [json.loads(line[6:]) for line in stream.splitlines() if line[:6] == "data: "]
        assert [log for event in events for log in event.get("logs") or ()] == before
        child = subprocess.run(
            [sys.executable, "-c", FAL_CLIENT_STATUS_SCRIPT, request_id],
            env=fal_client_env(second.port, tls),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout.splitlines()[-1].removeprefix("RESULT "))
    assert seen == {"status": "Completed", "logs": before}
