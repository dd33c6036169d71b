"""The key-value store's default backend: one SQLite file in the data dir, shared by a host.

Every runner of a host (and every app) opens ``DATA_DIR/kv.sqlite3``. SQLite in WAL mode lets
readers go on while one process writes; a writer that finds the file locked waits at most
``BUSY_TIMEOUT_S`` and then fails with :class:`KVStoreException` instead of hanging. Each call
opens its own connection (cheap for a local file, and safe from any thread or process); every
operation is a single statement, so it is atomic. A data dir on a network filesystem shared by
several hosts is not safe for SQLite: configure Redis for a cluster.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from minifal.toolkit.exceptions import KVStoreException

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    db_name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (db_name, key)
) WITHOUT ROWID
"""


class SQLiteKVBackend:
    """Values with an expiry time, per namespace, in one SQLite file."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._ready = False

    def get(self, db_name: str, key: str) -> str | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT value FROM kv WHERE db_name = ? AND key = ? AND expires_at > ?",
                (db_name, key, self._clock()),
            ).fetchone()
            return None if row is None else row[0]

        return self._run(read)

    def set(self, db_name: str, key: str, value: str, ttl_s: int) -> None:
        now = self._clock()

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO kv (db_name, key, value, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (db_name, key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at",
                (db_name, key, value, now + ttl_s),
            )
            # Expired entries are invisible already; drop this namespace's, so the file stays small.
            db.execute("DELETE FROM kv WHERE db_name = ? AND expires_at <= ?", (db_name, now))

        self._run(write)

    def delete(self, db_name: str, key: str) -> None:
        self._run(
            lambda db: db.execute("DELETE FROM kv WHERE db_name = ? AND key = ?", (db_name, key))
        )

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` on a fresh connection; a locked file is retried until the deadline.

        SQLite's busy timeout does not cover every lock: switching a new file to WAL, or a
        connection reading the WAL index while another process recovers it, answers "database is
        locked" at once. Every operation here is idempotent (an upsert, deletes, a read), so it
        is simply run again, with a short backoff, until ``BUSY_TIMEOUT_S`` has passed.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                with closing(self._connect()) as db:
                    return operation(db)
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() >= deadline:
                    raise KVStoreException(f"Key-value store {self.path} failed: {exc}") from exc
            except (sqlite3.Error, OSError) as exc:
                raise KVStoreException(f"Key-value store {self.path} failed: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # WAL with NORMAL sync never corrupts the file; a power cut may lose the last writes.
        db.execute("PRAGMA synchronous = NORMAL")
        if not self._ready:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(SCHEMA)
            self._ready = True
        return db


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message
