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
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from minifal.toolkit.exceptions import KVStoreException

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
        with self._connection() as db:
            row = db.execute(
                "SELECT value FROM kv WHERE db_name = ? AND key = ? AND expires_at > ?",
                (db_name, key, self._clock()),
            ).fetchone()
        return None if row is None else row[0]

    def set(self, db_name: str, key: str, value: str, ttl_s: int) -> None:
        now = self._clock()
        with self._connection() as db:
            db.execute(
                "INSERT INTO kv (db_name, key, value, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (db_name, key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at",
                (db_name, key, value, now + ttl_s),
            )
            # Expired entries are invisible already; drop this namespace's, so the file stays small.
            db.execute("DELETE FROM kv WHERE db_name = ? AND expires_at <= ?", (db_name, now))

    def delete(self, db_name: str, key: str) -> None:
        with self._connection() as db:
            db.execute("DELETE FROM kv WHERE db_name = ? AND key = ?", (db_name, key))

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(self._connect()) as db:
                yield db
        except (sqlite3.Error, OSError) as exc:
            raise KVStoreException(f"Key-value store {self.path} failed: {exc}") from exc

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
