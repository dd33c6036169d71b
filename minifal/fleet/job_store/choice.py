"""``--queue-store``: which job store a gateway journals its queue in.

sqlite                        DATA_DIR/queue/ (the default)
sqlite:///ABS/DIR[?synchronous=full]
                              a directory of your choice; ``full``: an fsync per batch
redis://HOST:PORT/DB[?lease=10&prefix=minifal:queue:]
                              Redis (also ``rediss://``), shared by several gateways
memory                        nothing kept: the queue dies with the gateway

A gateway that serves several apps keeps one store per app (``namespace``: the app's name):
DATA_DIR/queue/apps/<app>/, DIR/apps/<app>/, or the Redis prefix followed by ``<app>:``, so
that each app takes up only its own requests after a restart.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from minifal.fleet.job_store.base import JobStore, StoreUnavailable
from minifal.fleet.job_store.memory import MemoryJobStore
from minifal.fleet.job_store.rules import Retention

"""The default of ``minifal run --queue-store`` (one of the forms above)."""
DEFAULT_QUEUE_STORE = "sqlite"


def job_store_for(
    spec: str | None, data_dir: Path, retention: Retention, namespace: str | None = None
) -> JobStore:
    """The store ``spec`` names (raises ``ValueError`` with what is wrong); ``namespace``: one
    app's part of it, where a gateway serves several."""
    spec = (spec or DEFAULT_QUEUE_STORE).strip()
    if spec == "memory":
        return MemoryJobStore()
    within = Path("apps", namespace) if namespace else Path()
    if spec == "sqlite":
        return _sqlite(data_dir / "queue" / within, retention, {})
    parts = urlsplit(spec)
    options = dict(parse_qsl(parts.query))
    if parts.scheme == "sqlite":
        if not parts.path.startswith("/"):
            raise ValueError("sqlite:///ABSOLUTE/DIR (three slashes and an absolute path)")
        return _sqlite(Path(parts.path) / within, retention, options)
    if parts.scheme in ("redis", "rediss"):
        from minifal.fleet.job_store.redis import (
            DEFAULT_LEASE_SECONDS,
            DEFAULT_PREFIX,
            RedisJobStore,
        )

        lease = _seconds(options.pop("lease", str(DEFAULT_LEASE_SECONDS)), "lease")
        prefix = options.pop("prefix", DEFAULT_PREFIX) + (f"{namespace}:" if namespace else "")
        url = urlunsplit(parts._replace(query=urlencode(options)))
        return RedisJobStore(url, retention, lease_seconds=lease, prefix=prefix)
    raise ValueError(f"{spec!r}: expected sqlite, sqlite:///DIR, redis://HOST:PORT/DB or memory")


def check_reachable(store: JobStore) -> None:
    """Before the gateway starts: a Redis store answers a PING (raises ``StoreUnavailable``),
    so that a wrong URL is one line at the command line, not a failed startup."""
    url = getattr(store, "url", None)
    if url is None:
        return
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StoreUnavailable(f"cannot reach {url}: {exc}") from exc
    finally:
        client.close()


def _sqlite(directory: Path, retention: Retention, options: dict[str, str]) -> JobStore:
    from minifal.fleet.job_store.sqlite import SqliteJobStore

    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ValueError(f"sqlite store: unknown option(s) {', '.join(sorted(unknown))}")
    return SqliteJobStore(directory, retention, options.get("synchronous", "NORMAL"))


def _seconds(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name} must be seconds, not {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"{name} must be more than 0 seconds")
    return seconds
