"""The job store in the data dir (the default): one SQLite database in WAL mode.

    DATA_DIR/queue/requests.db      one row per request (small bodies, results, logs inline)
    DATA_DIR/queue/bodies/<id>      bodies over ``INLINE_BYTES``
    DATA_DIR/queue/results/<id>     results over ``INLINE_BYTES``
    DATA_DIR/queue/logs/<id>        log lines (stored with the answer) over ``INLINE_BYTES``
    DATA_DIR/queue/lock             held (flock) by the gateway using the store

Every write goes through one task the store owns, which takes whatever has arrived since its
last batch and writes it in one transaction; ``accept`` and ``complete`` return once their
batch is committed. So a burst of submits costs one commit, not one each. With
``synchronous=NORMAL`` (the default) a commit appends to the WAL without an fsync, a few tens
of microseconds: it runs on the event loop, and a thread of the store's copies the WAL into
the database (the checkpoint, the step that fsyncs) every second; batches that write files
(bodies, results and log lines over ``INLINE_BYTES``) or prune go to that thread. This
survives a crash of the gateway's process; a crash of the machine may lose the commits since
the last checkpoint. ``synchronous=FULL`` loses none of them, at an fsync per batch, every
batch on the thread. docs/queue.md says more.

(It is long because the schema, the writer and the SQL of each operation belong together.)

One gateway per store: the lock says which. A gateway killed by any signal releases it, so the
next one on the same data dir owns every request left unanswered and resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from minifal.fleet.job_store.base import (
    StoreBusy,
    StoredRequest,
    StoreSize,
    StoreUnavailable,
    decode_logs,
    encode_logs,
)
from minifal.fleet.job_store.batched_writer import BatchedWriter, Operation
from minifal.fleet.job_store.rules import Retention
from minifal.runner.log_lines import LogEntry

logger = logging.getLogger("minifal.fleet")

T = TypeVar("T")

CHECKPOINT_EVERY_SECONDS = 1.0
"""How often the thread copies the WAL into the database (commits on the loop never do)."""
WAL_SIZE_LIMIT = 4 * 2**20
"""The WAL file is cut back to this many bytes each time it starts over after a checkpoint."""
INLINE_BYTES = 64 * 1024
"""Bodies, results and log lines up to this size live in their row; larger ones in files
beside it."""
FILE_FOLDERS = ("bodies", "results", "logs")
PRUNE_CHUNK = 500
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    priority TEXT NOT NULL,
    start_timeout REAL,
    webhook_url TEXT,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    runner_id TEXT,
    started REAL,
    finished REAL,
    body BLOB,
    body_file INTEGER NOT NULL DEFAULT 0,
    result_status INTEGER,
    result_headers TEXT,
    result_body BLOB,
    result_file INTEGER NOT NULL DEFAULT 0,
    webhook_state TEXT NOT NULL,
    size INTEGER NOT NULL,
    logs BLOB,
    logs_file INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_open ON requests (status, created);
CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished);
"""
ADDED_COLUMNS = {"logs": "BLOB", "logs_file": "INTEGER NOT NULL DEFAULT 0"}
"""Columns a database made by an earlier minifal lacks: added when it is opened."""


def _log_failed_checkpoint(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.error("queue store: checkpoint failed: %s", done.exception())


class SqliteJobStore:
    durable = True
    shared = False

    def __init__(
        self,
        directory: Path,
        retention: Retention | None = None,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        self.directory = directory
        self.retention = retention or Retention()
        self.synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._lock_file: Any = None
        self._writer = BatchedWriter(self._write)
        self._on_loop = self.synchronous in ("OFF", "NORMAL")
        """Commits that need no fsync run on the event loop itself (see ``_needs_thread``)."""
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing: asyncio.Future[None] | None = None
        self._last_checkpoint = 0.0

    @property
    def path(self) -> Path:
        return self.directory / "requests.db"

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        for folder in (self.directory, *(self.directory / name for name in FILE_FOLDERS)):
            folder.mkdir(parents=True, exist_ok=True)
        lock_file = (self.directory / "lock").open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise StoreBusy(f"another gateway uses the queue store in {self.directory}") from None
        self._lock_file = lock_file
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="job-store")
        await self._call(self._connect)
        self._writer.start()

    async def close(self) -> None:
        """Write what was sent, then let go of the database and the lock."""
        if not self._writer.running:
            return
        await self._writer.close()
        if self._checkpointing is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._checkpointing
        await self._call(self._disconnect)
        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._lock_file.close()  # releases the flock

    def _connect(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        connection.executescript(SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(requests)")}
        for name, declaration in ADDED_COLUMNS.items():
            if name not in columns:
                connection.execute(f"ALTER TABLE requests ADD COLUMN {name} {declaration}")
        self._connection = connection
        if self._on_loop:
            # Commits on the event loop never checkpoint (the step that fsyncs): the thread
            # does, through a connection of its own.
            connection.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None)
            self._checkpointer.execute(f"PRAGMA synchronous={self.synchronous}")

    def _disconnect(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._checkpointer.close()
            self._checkpointer = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _checkpoint(self) -> None:
        assert self._checkpointer is not None
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _maybe_checkpoint(self) -> None:
        """At most every ``CHECKPOINT_EVERY_SECONDS``, one at a time, on the thread."""
        now = time.monotonic()
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        if now - self._last_checkpoint < CHECKPOINT_EVERY_SECONDS:
            return
        self._last_checkpoint = now
        self._checkpointing = asyncio.ensure_future(self._call(self._checkpoint))
        self._checkpointing.add_done_callback(_log_failed_checkpoint)

    def _needs_thread(self, operation: Operation) -> bool:
        """Writes that touch more than the WAL go to the thread: files, retention, sizes (and
        every write when each commit fsyncs)."""
        if not self._on_loop:
            return True
        kind = operation[0]
        if kind == "accept":
            return len(operation[1].body) > INLINE_BYTES
        if kind == "complete":
            return len(operation[4]) > INLINE_BYTES or len(operation[6]) > INLINE_BYTES
        return kind in ("prune", "size")

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreUnavailable("the queue store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"queue store: {exc}") from exc

    # -- writes ------------------------------------------------------------------------------------

    async def accept(self, request: StoredRequest) -> None:
        await self._writer.send_and_wait(("accept", request))

    def started(self, request_id: str, attempts: int, runner_id: str, at: float) -> None:
        self._writer.send(("started", request_id, attempts, runner_id, at))

    def requeued(self, request_id: str) -> None:
        self._writer.send(("requeued", request_id))

    async def complete(
        self,
        request_id: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        finished: float,
        logs: Sequence[LogEntry] = (),
    ) -> bool:
        operation = ("complete", request_id, status, headers, body, finished, encode_logs(logs))
        return bool(await self._writer.send_and_wait(operation))

    def webhook_done(self, request_id: str) -> None:
        self._writer.send(("webhook_done", request_id))

    async def _write(self, operations: list[Operation]) -> list[Any]:
        """One batch in one commit: on the event loop when it needs no fsync (a commit to the
        WAL is cheaper than a trip to the thread), else on the store's thread."""
        if any(self._needs_thread(op) for op in operations):
            return await self._call(self._write_batch, operations)  # type: ignore[no-any-return]
        try:
            results = self._write_batch(operations)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"queue store: {exc}") from exc
        self._maybe_checkpoint()
        return results

    def _write_batch(self, operations: list[Operation]) -> list[Any]:
        connection = self._connection
        assert connection is not None
        results: list[Any] = []
        connection.execute("BEGIN")
        try:
            for operation in operations:
                results.append(getattr(self, "_write_" + operation[0])(connection, *operation[1:]))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return results

    def _write_accept(self, connection: sqlite3.Connection, request: StoredRequest) -> None:
        in_file = len(request.body) > INLINE_BYTES
        if in_file:
            (self.directory / "bodies" / request.id).write_bytes(request.body)
        connection.execute(
            "INSERT INTO requests (id, path, headers, priority, start_timeout, webhook_url,"
            " created, status, attempts, body, body_file, webhook_state, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request.id,
                request.path,
                json.dumps(request.headers),
                request.priority,
                request.start_timeout,
                request.webhook_url,
                request.created,
                request.status,
                request.attempts,
                None if in_file else request.body,
                int(in_file),
                request.webhook_state,
                request.size,
            ),
        )

    def _write_started(
        self, connection: sqlite3.Connection, request_id: str, attempts: int, runner: str, at: float
    ) -> None:
        connection.execute(
            "UPDATE requests SET status = 'IN_PROGRESS', attempts = ?, runner_id = ?, started = ?"
            " WHERE id = ? AND status != 'COMPLETED'",
            (attempts, runner, at, request_id),
        )

    def _write_requeued(self, connection: sqlite3.Connection, request_id: str) -> None:
        connection.execute(
            "UPDATE requests SET status = 'IN_QUEUE', runner_id = NULL, started = NULL"
            " WHERE id = ? AND status != 'COMPLETED'",
            (request_id,),
        )

    def _write_complete(
        self,
        connection: sqlite3.Connection,
        request_id: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        finished: float,
        logs: bytes,
    ) -> bool:
        """The answer and the request's lines, in one ``UPDATE``. Only a request with no answer
        yet is answered, and its files written: a second answer leaves the first's alone."""
        in_file = len(body) > INLINE_BYTES
        logs_in_file = len(logs) > INLINE_BYTES
        (status_now,) = connection.execute(
            "SELECT status FROM requests WHERE id = ?", (request_id,)
        ).fetchone() or (None,)
        if status_now is None or status_now == "COMPLETED":
            return False
        if in_file:
            (self.directory / "results" / request_id).write_bytes(body)
        if logs_in_file:
            (self.directory / "logs" / request_id).write_bytes(logs)
        cursor = connection.execute(
            "UPDATE requests SET status = 'COMPLETED', result_status = ?, result_headers = ?,"
            " result_body = ?, result_file = ?, logs = ?, logs_file = ?, finished = ?,"
            " size = size + ? WHERE id = ? AND status != 'COMPLETED'",
            (
                status,
                json.dumps(headers),
                None if in_file else body,
                int(in_file),
                None if logs_in_file else logs,
                int(logs_in_file),
                finished,
                len(body) + len(logs),
                request_id,
            ),
        )
        return cursor.rowcount == 1

    def _write_webhook_done(self, connection: sqlite3.Connection, request_id: str) -> None:
        connection.execute("UPDATE requests SET webhook_state = 'done' WHERE id = ?", (request_id,))

    # -- reads -------------------------------------------------------------------------------------

    async def get(self, request_id: str) -> StoredRequest | None:
        rows = await self._writer.send_and_wait(("select", "WHERE id = ?", (request_id,)))
        return rows[0] if rows else None

    async def take_over(self) -> list[StoredRequest]:
        """Every request left unanswered, or answered with its webhook not sent: the lock
        says no other gateway holds them."""
        where = "WHERE status != 'COMPLETED' OR webhook_state = 'pending' ORDER BY created"
        return await self._writer.send_and_wait(("select", where, ()))  # type: ignore[no-any-return]

    def _write_select(
        self, connection: sqlite3.Connection, where: str, parameters: tuple[Any, ...]
    ) -> list[StoredRequest]:
        """A read, in line with the writes: it sees every write sent before it."""
        cursor = connection.execute(
            "SELECT id, path, headers, priority, start_timeout, webhook_url, created, status,"
            " attempts, runner_id, started, finished, body, body_file, result_status,"
            " result_headers, result_body, result_file, webhook_state, logs, logs_file"
            " FROM requests " + where,
            parameters,
        )
        return [self._record(row) for row in cursor.fetchall()]

    def _record(self, row: tuple[Any, ...]) -> StoredRequest:
        (id_, path, headers, priority, start_timeout, webhook_url, created, status, attempts,
         runner_id, started, finished, body, body_file, result_status, result_headers,
         result_body, result_file, webhook_state, logs, logs_file) = row  # fmt: skip
        if body_file:
            body = self._read_file("bodies", id_)
        if result_file:
            result_body = self._read_file("results", id_)
        if logs_file:
            logs = self._read_file("logs", id_)
        return StoredRequest(
            id=id_,
            path=path,
            body=body or b"",
            headers=json.loads(headers),
            priority=priority,
            start_timeout=start_timeout,
            webhook_url=webhook_url,
            created=created,
            status=status,
            attempts=attempts,
            runner_id=runner_id,
            started=started,
            finished=finished,
            result_status=result_status,
            result_headers=json.loads(result_headers) if result_headers else {},
            result_body=result_body or b"",
            webhook_state=webhook_state,
            logs=decode_logs(id_, logs or b""),
        )

    def _read_file(self, folder: str, request_id: str) -> bytes:
        try:
            return (self.directory / folder / request_id).read_bytes()
        except FileNotFoundError:
            logger.error("queue store: %s/%s is missing", folder, request_id)
            return b""

    # -- retention ---------------------------------------------------------------------------------

    async def prune(self, now: float) -> int:
        return await self._writer.send_and_wait(("prune", now))  # type: ignore[no-any-return]

    def _write_prune(self, connection: sqlite3.Connection, now: float) -> int:
        """``rules.to_forget`` in SQL: past the age first, then the oldest over the bytes."""
        answered = "status = 'COMPLETED' AND webhook_state != 'pending'"
        forgotten = self._forget(
            connection,
            f"WHERE {answered} AND finished < ? ORDER BY finished",
            (now - self.retention.seconds,),
        )
        (total,) = connection.execute("SELECT COALESCE(SUM(size), 0) FROM requests").fetchone()
        while total > self.retention.bytes:
            rows = connection.execute(
                f"SELECT id, size FROM requests WHERE {answered} ORDER BY finished LIMIT ?",
                (PRUNE_CHUNK,),
            ).fetchall()
            if not rows:
                break
            over, ids = total - self.retention.bytes, []
            for request_id, size in rows:
                if over <= 0:
                    break
                ids.append(request_id)
                over -= size
                total -= size
            placeholders = ",".join("?" * len(ids))
            forgotten += self._forget(connection, f"WHERE id IN ({placeholders})", tuple(ids))
        return forgotten

    def _forget(
        self, connection: sqlite3.Connection, where: str, parameters: tuple[Any, ...]
    ) -> int:
        rows = connection.execute(
            "SELECT id, body_file, result_file, logs_file FROM requests " + where, parameters
        ).fetchall()
        if not rows:
            return 0
        for start in range(0, len(rows), PRUNE_CHUNK):  # in the batch's transaction
            chunk = [row[0] for row in rows[start : start + PRUNE_CHUNK]]
            placeholders = ",".join("?" * len(chunk))
            connection.execute(f"DELETE FROM requests WHERE id IN ({placeholders})", chunk)
        for request_id, *in_files in rows:
            for folder, in_file in zip(FILE_FOLDERS, in_files, strict=True):
                if in_file:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / folder / request_id)
        return len(rows)

    async def size(self) -> StoreSize:
        return await self._writer.send_and_wait(("size",))  # type: ignore[no-any-return]

    def _write_size(self, connection: sqlite3.Connection) -> StoreSize:
        (count,) = connection.execute("SELECT COUNT(*) FROM requests").fetchone()
        on_disk = 0
        for path in (self.path, self.path.with_name("requests.db-wal")):
            with contextlib.suppress(FileNotFoundError):
                on_disk += path.stat().st_size
        for folder in FILE_FOLDERS:
            with os.scandir(self.directory / folder) as entries:
                on_disk += sum(entry.stat().st_size for entry in entries)
        return StoreSize(count, on_disk)
