"""The Redis job store against a real ``redis-server`` on a loopback port: claims, leases,
takeover, the first answer standing, retention."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis_support import redis_server

from minifal.fleet.job_store.base import StoredRequest, StoreUnavailable
from minifal.fleet.job_store.redis import RedisJobStore
from minifal.fleet.job_store.rules import Retention
from minifal.runner.log_lines import LogEntry

pytestmark = pytest.mark.process

TAKEOVER_TIMEOUT_S = 10.0
SCENARIO_TIMEOUT_S = 45.0


def request(request_id: str, created: float, **fields: object) -> StoredRequest:
    stored = StoredRequest(
        id=request_id,
        path="/",
        body=b'{"x": 1}',
        headers={"content-type": "application/json"},
        priority="normal",
        start_timeout=None,
        webhook_url=None,
        created=created,
    )
    for name, value in fields.items():
        setattr(stored, name, value)
    return stored


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    with redis_server(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url  # type: ignore[misc]


def test_a_gateway_that_stops_renewing_loses_its_open_requests_to_another(
    redis_url: str,
) -> None:
    async def scenario() -> None:
        prefix = "t1:"
        first = RedisJobStore(redis_url, lease_seconds=0.6, prefix=prefix)
        second = RedisJobStore(redis_url, lease_seconds=0.6, prefix=prefix)
        await first.open()
        await second.open()
        for index, name in enumerate(("waiting", "running", "answered")):
            await first.accept(request(name, created=float(index)))
        first.started("running", 1, "runner-0", 5.0)
        assert await first.complete("answered", 200, {"a": "1"}, b"first", 6.0)
        assert await second.take_over() == []  # the first gateway's lease holds
        assert first._renewer is not None
        first._renewer.cancel()  # as a kill -9 would: no more renewals
        deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        taken: list[StoredRequest] = []
        while not taken:
            assert time.monotonic() < deadline, "no takeover after the lease expired"
            await asyncio.sleep(0.1)  # back-off of a bounded poll
            taken = await second.take_over()
        assert [(r.id, r.status, r.attempts) for r in taken] == [
            ("waiting", "IN_QUEUE", 0),
            ("running", "IN_PROGRESS", 1),
        ]
        assert await second.take_over() == []  # claimed once
        # Both run "running" to the end: the first answer stored is the one everybody reads.
        assert await second.complete("running", 200, {}, b"from-second", 7.0)
        assert not await first.complete("running", 200, {}, b"from-first", 8.0)
        stored = await first.get("running")
        assert stored is not None and stored.result_body == b"from-second"
        answered = await second.get("answered")
        assert answered is not None and answered.result_headers == {"a": "1"}
        await second.close()
        await first.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


def test_redis_retention_and_webhook_state(redis_url: str) -> None:
    async def scenario() -> None:
        store = RedisJobStore(redis_url, Retention(seconds=100, bytes=2000), prefix="t2:")
        await store.open()
        body = b"z" * 600
        for index in range(5):
            await store.accept(request(f"r{index}", created=index))
            await store.complete(f"r{index}", 200, {}, body, finished=1000.0 + index)
        await store.accept(request("hook", 9.0, webhook_url="http://h/", webhook_state="pending"))
        await store.complete("hook", 200, {}, b"{}", finished=0.0)
        assert await store.prune(now=1010.0) >= 3  # oldest first, down to 2000 bytes
        assert await store.get("r0") is None and await store.get("r4") is not None
        assert await store.get("hook") is not None  # its webhook is not sent yet
        store.webhook_done("hook")
        assert await store.prune(now=5000.0) == 2  # r4 and hook are past the age now
        assert (await store.size()).requests == 0
        await store.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


def test_redis_keeps_log_lines_with_the_answer_and_counts_them(redis_url: str) -> None:
    lines = [LogEntry("a", f"a {i} " + "x" * 100, "STDOUT", 10.0 + i) for i in range(50)]

    async def scenario() -> None:
        store = RedisJobStore(redis_url, Retention(seconds=100, bytes=5000), prefix="t4:")
        other = RedisJobStore(redis_url, prefix="t4:")  # another gateway reads them
        await store.open()
        await other.open()
        for index, name in enumerate(("a", "b")):
            await store.accept(request(name, created=float(index)))
        assert await store.complete("a", 200, {}, b"{}", 1.0, lines)
        assert await store.complete("b", 200, {}, b"{}", 2.0)
        assert not await other.complete("b", 500, {}, b"{}", 3.0, lines[:1])  # the first stands
        stored_a, stored_b = await other.get("a"), await other.get("b")
        assert stored_a is not None and stored_a.logs == lines
        assert stored_b is not None and stored_b.logs == [] and stored_b.result_status == 200
        assert await store.prune(now=2.0) == 1  # a's lines are over the 5000 bytes: it goes
        assert await store.get("a") is None and await store.get("b") is not None
        await other.close()
        await store.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))


def test_an_unreachable_redis_refuses_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        with redis_server(tmp_path) as (url, server):
            store = RedisJobStore(url, prefix="t3:")
            await store.open()
            server.terminate()
            server.wait(10)
            with pytest.raises(StoreUnavailable):
                await store.accept(request("lost", 1.0))
            await store.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S))
