"""Forwarding: a fal app path to an endpoint, the headers a runner gets, and the retry rules of
queue requests (pure, then over fake runners and a fake runner client: no processes)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from minifal.fleet.forwarding import (
    MAX_ATTEMPTS,
    Forwarder,
    answer_headers_raw,
    forward_headers,
    resolve_endpoint,
    worth_retrying,
)
from minifal.fleet.job_store.base import StoredRequest, stored_request
from minifal.fleet.job_store.memory import MemoryJobStore
from minifal.fleet.job_store.sqlite import SqliteJobStore
from minifal.fleet.jobs import Job
from minifal.fleet.metrics import GatewayMetrics
from minifal.fleet.request_logs import RequestLogs
from minifal.fleet.runner_http import RunnerAddress, RunnerConnectionError
from minifal.fleet.scheduler import Scheduler
from minifal.runner.app_manifest import AppManifest
from minifal.runner.log_lines import LogEntry
from minifal.settings import AppSettings

pytestmark = pytest.mark.unit

# -- resolve_endpoint ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "expected"),
    [
        ("local/my-app", ("/", "local")),
        ("local/my-app/", ("/", "local")),
        ("someone/my-app/stream", ("/stream", "someone")),
        ("someone/my-app/a/b", ("/a/b", "someone")),
        ("", ("/", "local")),
        ("stream", ("/stream", "local")),
        ("a/b/c", ("/a/b/c", "local")),
        ("my-app/stream", ("/my-app/stream", "local")),
        ("//local//my-app//ws", ("/ws", "local")),
    ],
)
def test_resolve_endpoint(rest: str, expected: tuple[str, str]) -> None:
    assert resolve_endpoint(rest, "my-app") == expected


# -- the retry rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "attempt", "retried"),
    [
        (503, 1, True),
        (504, 1, True),
        (503, MAX_ATTEMPTS - 1, True),
        (503, MAX_ATTEMPTS, False),  # the last attempt's answer is the answer
        (500, 1, False),
        (502, 1, False),
        (429, 1, False),
        (422, 1, False),
        (200, 1, False),
    ],
)
def test_worth_retrying(status: int, attempt: int, retried: bool) -> None:
    assert worth_retrying(status, attempt) is retried


def test_forward_headers_drop_hop_by_hop_and_the_key_and_add_the_request_identity() -> None:
    async def scenario() -> dict[str, str]:
        job = Job("/generate", b"", {})
        incoming = {
            "Authorization": "Key s3cret",
            "Connection": "keep-alive",
            "Host": "gateway",
            "Content-Length": "2",
            "x-custom": "kept",
        }
        return {**forward_headers(job, incoming), "id": job.id}

    headers = asyncio.run(scenario())
    assert headers == {
        "x-custom": "kept",
        "x-fal-request-id": headers["id"],
        "x-fal-endpoint": "/generate",
        "id": headers["id"],
    }


def test_answers_lose_hop_by_hop_headers_and_the_runners_date_and_server() -> None:
    upstream = [
        (b"date", b"Fri, 27 Nov 2026 16:31:57 GMT"),
        (b"server", b"uvicorn"),
        (b"connection", b"keep-alive, x-hop"),
        (b"keep-alive", b"timeout=5"),
        (b"x-hop", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"content-type", b"application/json"),
        (b"x-fal-billable-units", b"2"),
    ]
    assert answer_headers_raw(upstream) == [
        (b"content-type", b"application/json"),
        (b"x-fal-billable-units", b"2"),
    ]


# -- a queue request over fake runners and a fake transport ----------------------------------------


@dataclass
class FakeRunner:
    runner_id: str
    url: str
    address: RunnerAddress
    in_flight: int = 0
    last_dispatch: float = 0.0
    accepts_requests: bool = True

    def took_request(self, now: float) -> None:
        self.in_flight += 1
        self.last_dispatch = now

    def finished_request(self, now: float) -> None:
        self.in_flight -= 1


class FakeSupervisor:
    def __init__(self, runners: list[FakeRunner]) -> None:
        self.runners = runners
        self.lost: list[str] = []

    def connection_lost(self, runner: FakeRunner, error: Exception) -> None:
        self.lost.append(runner.runner_id)
        runner.accepts_requests = False

    def replace(self, runner: FakeRunner, reason: str) -> None:
        raise AssertionError("no request outlives request_timeout here")


def serve_queued(
    answers: dict[str, list[int | None]],
    store_dir: Path | None = None,
    stored: StoredRequest | None = None,
) -> tuple[Job, list[str], FakeSupervisor]:
    """Run one queue request; each runner answers its statuses in turn (None: connection lost).
    With ``store_dir``, through a SQLite job store there; ``stored``: a request the store held
    already, resumed (as a gateway started on its data dir does)."""

    async def scenario() -> tuple[Job, list[str], FakeSupervisor]:
        runners = [FakeRunner(name, f"http://{name}", RunnerAddress(name, 80)) for name in answers]
        calls: list[str] = []

        class FakeAnswer:
            def __init__(self, status: int, body: bytes) -> None:
                self.status = status
                self.headers = [(b"content-type", b"application/json")]
                self.body = body

            async def read(self) -> bytes:
                return self.body

            def close(self) -> None:
                pass

        class FakeRunnerClient:
            async def send(self, address: RunnerAddress, *_: object) -> FakeAnswer:
                host = address.host
                calls.append(host)
                status = answers[host].pop(0)
                if status is None:
                    raise RunnerConnectionError("reset")
                return FakeAnswer(status, json.dumps({"from": host}).encode())

        supervisor = FakeSupervisor(runners)
        scheduler = Scheduler(lambda: runners, max_multiplexing=1)  # type: ignore[arg-type,return-value]
        manifest = AppManifest("app", "App", AppSettings(), (), {})
        metrics = GatewayMetrics(lambda: [], lambda: 0)
        store = SqliteJobStore(store_dir) if store_dir else MemoryJobStore()
        await store.open()
        tasks: list[asyncio.Task[None]] = []

        def spawn(coroutine: Any, name: str) -> asyncio.Task[None]:
            tasks.append(asyncio.create_task(coroutine, name=name))
            return tasks[-1]

        async with httpx.AsyncClient() as client:
            forwarder = Forwarder(
                manifest,
                scheduler,
                supervisor,  # type: ignore[arg-type]
                metrics,
                FakeRunnerClient(),  # type: ignore[arg-type]
                client,
                spawn=spawn,
                store=store,
            )
            if stored is not None:
                await store.accept(stored)
                forwarder.resume(await store.take_over())
                job = forwarder.jobs[stored.id]
            else:
                job = Job("/", b"{}", {}, queued=True)
                await store.accept(stored_request(job))
                forwarder._run_queued(job)
            await asyncio.gather(*tasks)
            kept = await store.get(job.id)
        await store.close()
        assert kept is None or (kept.status, kept.result_status) == (
            "COMPLETED",
            job.response_status,
        )
        assert kept is None or kept.attempts == job.attempts
        return job, calls, supervisor

    return asyncio.run(scenario())


def test_a_queue_request_goes_to_another_runner_after_a_503() -> None:
    job, calls, _ = serve_queued({"a": [503], "b": [200]})
    assert calls == ["a", "b"]
    assert job.response_status == 200 and json.loads(job.response_body) == {"from": "b"}


def test_a_lost_connection_is_retried_and_the_runner_reported() -> None:
    job, calls, supervisor = serve_queued({"a": [None], "b": [200]})
    assert calls == ["a", "b"] and supervisor.lost == ["a"]
    assert job.response_status == 200


def test_a_client_error_is_never_retried() -> None:
    job, calls, _ = serve_queued({"a": [422], "b": []})
    assert calls == ["a"] and job.response_status == 422


def test_the_last_attempt_answers_whatever_it_got() -> None:
    job, calls, _ = serve_queued({"a": [503] * MAX_ATTEMPTS})
    assert len(calls) == MAX_ATTEMPTS and job.response_status == 503


def test_attempts_are_stored_and_counted_across_gateways(tmp_path: Path) -> None:
    job, calls, _ = serve_queued({"a": [503], "b": [200]}, tmp_path / "one")
    assert calls == ["a", "b"] and job.attempts == 2
    # A request that was on a runner when its gateway died, with 8 attempts used: 2 are left.
    cut_off = StoredRequest("r", "/", b"{}", {}, "normal", None, None, 1.0, "IN_PROGRESS", 8)
    job, calls, _ = serve_queued({"a": [503, 503, 200]}, tmp_path / "two", cut_off)
    assert calls == ["a", "a"] and job.response_status == 503 and job.attempts == MAX_ATTEMPTS
    used_up = StoredRequest("s", "/", b"{}", {}, "normal", None, None, 1.0, "IN_PROGRESS", 10)
    job, calls, _ = serve_queued({"a": [200]}, tmp_path / "three", used_up)
    assert calls == [] and job.response_status == 503  # as a lost runner's last attempt


def test_a_requests_lines_come_from_the_store_when_the_gateway_has_none(tmp_path: Path) -> None:
    """One gateway answers a queue request with its lines; the next one (a fresh memory, the
    same store) shows them; a gateway whose answer came second shows the first one's lines."""

    def gateway(store: SqliteJobStore) -> Forwarder:
        return Forwarder(
            AppManifest("app", "App", AppSettings(), (), {}),
            Scheduler(lambda: [], max_multiplexing=1),
            FakeSupervisor([]),  # type: ignore[arg-type]
            GatewayMetrics(lambda: [], lambda: 0),
            None,  # type: ignore[arg-type]  # no runner is called
            None,  # type: ignore[arg-type]
            store=store,
            request_logs=RequestLogs(),
        )

    def ran(forwarder: Forwarder, job: Job, message: str) -> None:
        forwarder.request_logs.track(job.id)
        forwarder.request_logs.add("runner-0", LogEntry(job.id, message, "INFO", 1.0))

    async def scenario() -> tuple[Any, Any, Any]:
        store = SqliteJobStore(tmp_path)
        await store.open()
        try:
            job = Job("/", b"{}", {}, queued=True, id="r")
            await store.accept(stored_request(job))
            first = gateway(store)
            ran(first, job, "first run")
            assert await first._store_answer(job, 200, b"{}", None)
            after_restart = gateway(store)
            found = await after_restart.find("r")
            assert isinstance(found, Job) and found.foreign
            shown = json.loads(after_restart.status(found, with_logs=True).body)["logs"]
            second = gateway(store)
            again = Job("/", b"{}", {}, queued=True, id="r")
            ran(second, again, "second run")
            assert not await second._store_answer(again, 500, b"{}", None)
            return shown, second._logs(again, True), after_restart._logs(found, True, start=1)
        finally:
            await store.close()

    shown, second_shows, from_one = asyncio.run(scenario())
    assert [(log["message"], log["level"], log["source"]) for log in shown] == [
        ("first run", "INFO", "USER")
    ]
    assert second_shows == shown  # the answer that stands, with its lines
    assert from_one == []
