"""The job store: the queue's pure rules, and the SQLite and memory stores in-process (a real
SQLite database in a temporary directory; no processes)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from minifal.fleet.job_store.base import (
    StoreBusy,
    StoredRequest,
    StoreUnavailable,
    decode_logs,
    encode_logs,
)
from minifal.fleet.job_store.choice import job_store_for
from minifal.fleet.job_store.memory import MemoryJobStore
from minifal.fleet.job_store.rules import Answered, Retention, resume_plan, to_forget
from minifal.fleet.job_store.sqlite import INLINE_BYTES, SqliteJobStore
from minifal.runner.log_lines import LogEntry

pytestmark = pytest.mark.unit

T = TypeVar("T")


def request(request_id: str, created: float = 1.0, **fields: object) -> StoredRequest:
    base = StoredRequest(
        id=request_id,
        path="/",
        body=b'{"x": 1}',
        headers={"content-type": "application/json"},
        priority="normal",
        start_timeout=30.0,
        webhook_url=None,
        created=created,
    )
    for name, value in fields.items():
        setattr(base, name, value)
    return base


# -- the rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "attempts", "webhook", "plan"),
    [
        ("IN_QUEUE", 0, "none", "run"),
        ("IN_PROGRESS", 1, "none", "run"),  # its runner died with its gateway
        ("IN_PROGRESS", 9, "pending", "run"),
        ("IN_PROGRESS", 10, "none", "fail"),  # the attempt bound counts across gateways
        ("COMPLETED", 1, "pending", "webhook"),
        ("COMPLETED", 1, "done", "nothing"),
        ("COMPLETED", 1, "none", "nothing"),
    ],
)
def test_resume_plan(status: str, attempts: int, webhook: str, plan: str) -> None:
    stored = request("a", status=status, attempts=attempts, webhook_state=webhook)
    assert resume_plan(stored, max_attempts=10) == plan


def test_retention_forgets_by_age_then_oldest_over_the_bytes() -> None:
    answered = [Answered("old", 10.0, 100), Answered("b", 50.0, 100), Answered("c", 60.0, 100)]
    assert to_forget(answered, now=100.0, retention=Retention(seconds=60, bytes=1000)) == ["old"]
    assert to_forget(answered, now=100.0, retention=Retention(seconds=1000, bytes=150)) == [
        "old",
        "b",
    ]
    assert to_forget(answered, now=100.0, retention=Retention(seconds=1000, bytes=300)) == []
    assert to_forget([], now=1.0, retention=Retention()) == []


def test_store_choice() -> None:
    data = Path("/tmp/data")
    assert isinstance(job_store_for(None, data, Retention()), SqliteJobStore)
    assert isinstance(job_store_for("memory", data, Retention()), MemoryJobStore)
    custom = job_store_for("sqlite:///srv/q?synchronous=full", data, Retention())
    assert isinstance(custom, SqliteJobStore)
    assert custom.directory == Path("/srv/q") and custom.synchronous == "FULL"
    redis = job_store_for("redis://127.0.0.1:6379/2?lease=4&prefix=x:", data, Retention())
    assert redis.shared and redis.lease_seconds == 4.0  # type: ignore[attr-defined]
    assert redis.url == "redis://127.0.0.1:6379/2"  # type: ignore[attr-defined]
    for bad in ("postgres://x", "sqlite://relative", "sqlite:///q?fast=1", "redis://h/0?lease=-1"):
        with pytest.raises(ValueError):
            job_store_for(bad, data, Retention())


# -- the SQLite store ------------------------------------------------------------------------------


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


def test_sqlite_keeps_requests_progress_and_answers_across_a_reopen(tmp_path: Path) -> None:
    big = b"x" * (INLINE_BYTES + 1)

    async def first_gateway() -> bool:
        store = SqliteJobStore(tmp_path)
        await store.open()
        await store.accept(request("waiting", created=1.0))
        await store.accept(request("running", created=2.0, body=big, webhook_state="pending"))
        await store.accept(request("answered", created=3.0))
        await store.accept(
            request("hooked", created=4.0, webhook_url="http://h/", webhook_state="pending")
        )
        store.started("running", 1, "runner-0", 5.0)
        assert await store.complete("answered", 200, {"x-a": "1"}, big, 6.0)
        assert not await store.complete("answered", 500, {}, b"second", 7.0)  # the first stands
        assert await store.complete("hooked", 200, {}, b"{}", 6.0)
        await store.close()  # as a kill would leave it: nothing more happens to them
        return True

    async def next_gateway() -> tuple[list[StoredRequest], StoredRequest | None]:
        store = SqliteJobStore(tmp_path)
        await store.open()
        try:
            return await store.take_over(), await store.get("answered")
        finally:
            await store.close()

    run(first_gateway)
    taken, answered = run(next_gateway)
    assert [r.id for r in taken] == ["waiting", "running", "hooked"]  # oldest first
    running = taken[1]
    assert running.status == "IN_PROGRESS" and running.attempts == 1 and running.body == big
    assert [resume_plan(r, 10) for r in taken] == ["run", "run", "webhook"]
    assert answered is not None and answered.result_status == 200
    assert answered.result_body == big and answered.result_headers == {"x-a": "1"}
    assert (tmp_path / "bodies" / "running").is_file()
    assert (tmp_path / "results" / "answered").is_file()


def test_sqlite_store_has_one_gateway_at_a_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        first, second = SqliteJobStore(tmp_path), SqliteJobStore(tmp_path)
        await first.open()
        with pytest.raises(StoreBusy):
            await second.open()
        await first.close()
        await second.open()  # the lock went with the first
        await second.close()

    run(scenario)


def test_a_closed_store_refuses_to_accept(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteJobStore(tmp_path)
        await store.open()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.accept(request("late"))

    run(scenario)


def test_sqlite_batches_concurrent_writes_and_keeps_their_order(tmp_path: Path) -> None:
    async def scenario() -> list[StoredRequest]:
        store = SqliteJobStore(tmp_path)
        await store.open()
        await asyncio.gather(*(store.accept(request(f"r{i}", created=i)) for i in range(200)))
        for i in range(200):
            store.started(f"r{i}", 1, "runner-0", 1.0)
            store.requeued(f"r{i}")
            store.started(f"r{i}", 2, "runner-1", 2.0)
        taken = await store.take_over()
        await store.close()
        return taken

    taken = run(scenario)
    assert [r.id for r in taken] == [f"r{i}" for i in range(200)]
    assert {(r.status, r.attempts, r.runner_id) for r in taken} == {("IN_PROGRESS", 2, "runner-1")}


def test_sqlite_retention_forgets_answers_and_their_files(tmp_path: Path) -> None:
    big = b"y" * (INLINE_BYTES + 1)

    async def scenario() -> tuple[int, int, list[str | None]]:
        store = SqliteJobStore(tmp_path, Retention(seconds=100, bytes=3 * len(big)))
        await store.open()
        for i in range(6):
            await store.accept(request(f"r{i}", created=i))
            await store.complete(f"r{i}", 200, {}, big, finished=1000.0 + i)
        await store.accept(request("open", created=9.0))
        await store.accept(request("hook", created=9.0, webhook_state="pending"))
        await store.complete("hook", 200, {}, b"{}", finished=0.0)  # old, but not delivered
        by_bytes = await store.prune(now=1010.0)
        by_age = await store.prune(now=1200.0)
        kept = [(await store.get(i)) for i in ("r5", "open", "hook", "r0")]
        await store.close()
        return by_bytes, by_age, [r.id if r else None for r in kept]

    by_bytes, by_age, kept = run(scenario)
    assert by_bytes == 4  # down to under 3 bodies' worth, oldest first
    assert by_age == 2
    assert kept == [None, "open", "hook", None]
    assert list((tmp_path / "results").iterdir()) == []


def log_lines(request_id: str, count: int, size: int = 10) -> list[LogEntry]:
    return [
        LogEntry(request_id, f"{request_id} {i} " + "x" * size, "INFO", 1000.0 + i, "INFO app: ")
        for i in range(count)
    ]


def test_log_lines_as_stored_keep_every_field() -> None:
    lines = [
        LogEntry("r", "héllo ✓", "STDOUT", 1.5),
        LogEntry("r", "logged", "WARNING", 2.25, "2026-12-06 WARNING app: "),
        LogEntry("r", "bad \udcff byte", "STDERR", 3.0),  # printed bytes, surrogate-escaped
    ]
    assert encode_logs([]) == b"" and decode_logs("r", b"") == []
    decoded = decode_logs("r", encode_logs(lines))
    assert decoded[:2] == lines[:2]
    assert decoded[2].message == "bad ? byte"


def test_sqlite_keeps_log_lines_with_the_answer_and_forgets_them_with_it(tmp_path: Path) -> None:
    small, big = log_lines("small", 3), log_lines("big", 100, 1000)  # big: a file beside the row
    first_result = b"a" * (INLINE_BYTES + 1)
    retention = Retention(seconds=100, bytes=150_000)  # less than big's result and lines

    async def first_gateway() -> None:
        store = SqliteJobStore(tmp_path, retention)
        await store.open()
        for name in ("small", "big", "none"):
            await store.accept(request(name))
        assert await store.complete("small", 200, {}, b"{}", 6.0, small)
        assert await store.complete("big", 200, {}, first_result, 5.0, big)
        second_result = b"b" * len(first_result)  # a file too: it must not replace the first
        assert not await store.complete("big", 500, {}, second_result, 7.0, log_lines("big", 1))
        assert await store.complete("none", 200, {}, b"{}", 6.0)
        await store.close()

    async def next_gateway() -> tuple[list[StoredRequest | None], int, StoredRequest | None]:
        store = SqliteJobStore(tmp_path, retention)
        await store.open()
        try:
            read = [await store.get(name) for name in ("small", "big", "none")]
            return read, await store.prune(now=10.0), await store.get("big")
        finally:
            await store.close()

    run(first_gateway)
    assert (tmp_path / "logs" / "big").is_file() and not (tmp_path / "logs" / "small").exists()
    (stored_small, stored_big, stored_none), pruned, big_after = run(next_gateway)
    assert stored_small is not None and stored_small.logs == small
    assert stored_big is not None and stored_big.logs == big  # the first answer's lines stand
    assert stored_big.result_status == 200 and stored_big.result_body == first_result
    assert stored_none is not None and stored_none.logs == []
    assert pruned == 1 and big_after is None  # the oldest; its lines were over the bytes
    assert list((tmp_path / "logs").iterdir()) == list((tmp_path / "results").iterdir()) == []


BEFORE_LOGS_SCHEMA = """
CREATE TABLE requests (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, headers TEXT NOT NULL, priority TEXT NOT NULL,
    start_timeout REAL, webhook_url TEXT, created REAL NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, runner_id TEXT, started REAL, finished REAL,
    body BLOB, body_file INTEGER NOT NULL DEFAULT 0, result_status INTEGER,
    result_headers TEXT, result_body BLOB, result_file INTEGER NOT NULL DEFAULT 0,
    webhook_state TEXT NOT NULL, size INTEGER NOT NULL
);
INSERT INTO requests (id, path, headers, priority, created, status, body, result_status,
    result_headers, result_body, finished, webhook_state, size)
VALUES ('old', '/', '{}', 'normal', 1.0, 'COMPLETED', x'7b7d', 200, '{}', x'7b7d', 2.0,
    'none', 516),
    ('waiting', '/', '{}', 'normal', 3.0, 'IN_QUEUE', x'7b7d', NULL, NULL, NULL, NULL,
    'none', 514);
"""


def test_a_database_from_before_log_lines_opens_and_takes_them(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "requests.db") as connection:
        connection.executescript(BEFORE_LOGS_SCHEMA)
    connection.close()
    lines = log_lines("waiting", 2)

    async def scenario() -> tuple[StoredRequest | None, StoredRequest | None, list[str]]:
        store = SqliteJobStore(tmp_path)
        await store.open()
        try:
            taken = [r.id for r in await store.take_over()]
            assert await store.complete("waiting", 200, {}, b"{}", 4.0, lines)
            return await store.get("old"), await store.get("waiting"), taken
        finally:
            await store.close()

    old, waiting, taken = run(scenario)
    assert taken == ["waiting"]
    assert old is not None and old.result_body == b"{}" and old.logs == []
    assert waiting is not None and waiting.logs == lines
