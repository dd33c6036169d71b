"""``fal.toolkit.kv``: ``KVStore``, small string values shared by every runner of an app.

On fal the store is a hosted service. minifal keeps it on your machines:

- by default in SQLite, ``DATA_DIR/kv.sqlite3``, shared by every runner of the host
  (:mod:`minifal.toolkit.kv.sqlite_store`);
- in Redis when ``$MINIFAL_KV_REDIS_URL`` is set (``redis://host:6379/0``), for runners spread
  over several hosts (:mod:`minifal.toolkit.kv.redis_store`, needs ``pip install redis``).

fal's rules are kept: values are strings, ``ttl`` is 60 s to 30 days and defaults to 30 days,
``delete`` of a missing key succeeds, a missing or expired key reads as ``None``. Errors raise
:class:`KVStoreException`.
"""

from __future__ import annotations

from typing import Protocol

from minifal.host import envs
from minifal.host.data_dir import data_dir
from minifal.toolkit.exceptions import KVStoreException

SQLITE_FILE_NAME = "kv.sqlite3"
FAL_KV_HOST = "https://kv.fal.media"
"""fal's hosted service; unused here (kept for code that reads it)."""

MIN_TTL_S = 60
MAX_TTL_S = 30 * 24 * 3600
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024
"""Bounds that keep one entry small: the store is for state, not files (use ``File``)."""


class KVBackend(Protocol):
    def get(self, db_name: str, key: str) -> str | None: ...
    def set(self, db_name: str, key: str, value: str, ttl_s: int) -> None: ...
    def delete(self, db_name: str, key: str) -> None: ...


def default_backend() -> KVBackend:
    """Redis when ``$MINIFAL_KV_REDIS_URL`` is set, else SQLite in the data dir."""
    redis_url = envs.KV_REDIS_URL.get()
    if redis_url:
        from minifal.toolkit.kv.redis_store import RedisKVBackend

        return RedisKVBackend(redis_url)
    from minifal.toolkit.kv.sqlite_store import SQLiteKVBackend

    return SQLiteKVBackend(data_dir() / SQLITE_FILE_NAME)


class KVStore:
    """A namespace (``db_name``) of string values."""

    def __init__(self, db_name: str, backend: KVBackend | None = None) -> None:
        if not isinstance(db_name, str) or not db_name:
            raise KVStoreException("db_name must be a non-empty string")
        self.db_name = db_name
        self._backend = backend if backend is not None else default_backend()

    def get(self, key: str) -> str | None:
        """The value stored under ``key``, or ``None`` if there is none (or it expired)."""
        return self._backend.get(self.db_name, _checked_key(key))

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (60 to 2592000; 30 days when omitted)."""
        if not isinstance(value, str):
            raise TypeError(
                f"KVStore values are strings (use json.dumps), got {type(value).__name__}"
            )
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise KVStoreException(f"Value is larger than {MAX_VALUE_BYTES} bytes")
        ttl_s = MAX_TTL_S if ttl is None else ttl
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int):
            raise KVStoreException(f"ttl must be a whole number of seconds, got {ttl!r}")
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise KVStoreException(f"ttl must be between {MIN_TTL_S} and {MAX_TTL_S}, got {ttl}")
        self._backend.set(self.db_name, _checked_key(key), value, ttl_s)

    def delete(self, key: str) -> None:
        """Remove ``key``; succeeds whether or not it existed."""
        self._backend.delete(self.db_name, _checked_key(key))


def _checked_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise KVStoreException("Keys are non-empty strings")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise KVStoreException(f"Key is longer than {MAX_KEY_BYTES} bytes")
    return key


__all__ = ["FAL_KV_HOST", "KVStore"]
