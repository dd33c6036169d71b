"""The key-value store's cluster backend: Redis, when ``$MINIFAL_KV_REDIS_URL`` is set.

Needs ``redis`` (redis-py). Keys are ``fal-kv:<db_name>:<key>``, set with Redis's own expiry.
Connecting and each command are bounded by ``TIMEOUT_S``; failures raise
:class:`KVStoreException` naming the server (without its password).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from minifal.host import envs
from minifal.toolkit.exceptions import KVStoreException

TIMEOUT_S = 5.0
KEY_PREFIX = "fal-kv"


class RedisKVBackend:
    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError:
            raise KVStoreException(
                f"{envs.KV_REDIS_URL.name} is set but redis-py is not installed (pip install redis)"
            ) from None
        self._errors = (redis.RedisError,)
        self._where = _safe_location(url)
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            decode_responses=True,
        )

    def get(self, db_name: str, key: str) -> str | None:
        return self._run("GET", lambda: self._client.get(_redis_key(db_name, key)))

    def set(self, db_name: str, key: str, value: str, ttl_s: int) -> None:
        self._run("SET", lambda: self._client.set(_redis_key(db_name, key), value, ex=ttl_s))

    def delete(self, db_name: str, key: str) -> None:
        self._run("DEL", lambda: self._client.delete(_redis_key(db_name, key)))

    def close(self) -> None:
        self._client.close()

    def _run(self, command: str, call: Any) -> Any:
        try:
            return call()
        except self._errors as exc:
            raise KVStoreException(f"Redis {command} on {self._where} failed: {exc}") from exc


def _redis_key(db_name: str, key: str) -> str:
    return f"{KEY_PREFIX}:{db_name}:{key}"


def _safe_location(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
