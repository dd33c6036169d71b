"""The job store in Redis (``--queue-store redis://host:port/db``): one queue, several gateways.

    <prefix>req:<id>        a hash: the request, its progress, its answer and log lines, its
                            claim (owner)
    <prefix>open            ids unanswered or with a webhook to send (score: when accepted)
    <prefix>done            ids answered and settled (score: when answered), for retention
    <prefix>done_bytes      bytes those hold
    <prefix>gateway:<id>    a gateway's lease: it exists while that gateway lives

A gateway claims what it accepts (``owner`` is its id) and renews its one lease every
``lease / 3`` seconds; every renewal it also takes over the open requests whose owner's lease
is gone (a gateway ``kill -9``'d stops renewing; after ``lease`` seconds its requests are
another's). Each write is one Lua script, so it is atomic: an answer is stored only if the
request has none (the first one stands, whoever runs it), a claim only if the old owner's lease
is gone. Writes go through one task, a pipeline per batch, like the SQLite store's (scripts are sent
with ``EVAL``: Redis caches them, and a restarted Redis needs no reload). Redis
Cluster is not supported (the scripts touch keys they do not declare).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from minifal.fleet.job_store.base import (
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

DEFAULT_LEASE_SECONDS = 10.0
"""A gateway's requests go to another after it has not renewed its lease for this long."""
DEFAULT_PREFIX = "minifal:queue:"
TIMEOUT_SECONDS = 5.0
"""Every call to Redis is bounded by this."""
PRUNE_CHUNK = 500

ACCEPT = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
UPDATE_OPEN = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'COMPLETED' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
COMPLETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'COMPLETED' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'COMPLETED', 'result_status', ARGV[2],
  'result_headers', ARGV[3], 'result_body', ARGV[4], 'finished', ARGV[5], 'logs', ARGV[6])
local size = redis.call('HINCRBY', KEYS[1], 'size', string.len(ARGV[4]) + string.len(ARGV[6]))
if redis.call('HGET', KEYS[1], 'webhook_state') ~= 'pending' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
  redis.call('INCRBY', KEYS[4], size)
end
return 1
"""
WEBHOOK_DONE = """
if redis.call('HGET', KEYS[1], 'webhook_state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'webhook_state', 'done')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'finished'), ARGV[1])
redis.call('INCRBY', KEYS[4], redis.call('HGET', KEYS[1], 'size'))
return 1
"""
TAKE_OVER = """
local claimed = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. 'req:' .. id
  local owner = redis.call('HGET', key, 'owner')
  local gone = not owner or redis.call('EXISTS', ARGV[1] .. 'gateway:' .. owner) == 0
  if owner ~= ARGV[2] and gone then
    redis.call('HSET', key, 'owner', ARGV[2])
    table.insert(claimed, id)
  end
end
return claimed
"""


class RedisJobStore:
    durable = True
    shared = True

    def __init__(
        self,
        url: str,
        retention: Retention | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.url = url
        self.retention = retention or Retention()
        self.lease_seconds = lease_seconds
        self.prefix = prefix
        self.gateway_id = uuid.uuid4().hex[:12]
        """This gateway's name in claims (a fresh one per process)."""
        self._client: aioredis.Redis | None = None
        self._writer = BatchedWriter(self._write)
        self._renewer: asyncio.Task[None] | None = None

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        client = aioredis.Redis.from_url(
            self.url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        self._client = client
        try:
            await self._renew()
        except RedisError as exc:
            await client.aclose()
            raise StoreUnavailable(f"queue store {self.url}: {exc}") from exc
        self._writer.start()
        self._renewer = asyncio.create_task(self._renew_forever(), name="job-store-lease")

    async def close(self) -> None:
        """Write what was sent and give the lease up: the gateway closes its store once its
        runners are stopped, so what it leaves unanswered is another gateway's at once."""
        if not self._writer.running:
            return
        await self._writer.close()
        assert self._renewer is not None
        self._renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewer
        self._renewer = None
        assert self._client is not None
        with contextlib.suppress(RedisError):
            await self._client.delete(self._key("gateway", self.gateway_id))
        await self._client.aclose()

    async def _renew(self) -> None:
        assert self._client is not None
        lease_ms = int(self.lease_seconds * 1000)
        await self._client.set(self._key("gateway", self.gateway_id), time.time(), px=lease_ms)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._renew()
            except RedisError as exc:
                logger.error("queue store: lease not renewed: %s", exc)

    # -- writes ------------------------------------------------------------------------------------

    async def accept(self, request: StoredRequest) -> None:
        await self._writer.send_and_wait(("accept", request))

    def started(self, request_id: str, attempts: int, runner_id: str, at: float) -> None:
        fields = ("status", "IN_PROGRESS", "attempts", attempts, "runner_id", runner_id)
        self._writer.send(("update_open", request_id, (*fields, "started", at)))

    def requeued(self, request_id: str) -> None:
        self._writer.send(("update_open", request_id, ("status", "IN_QUEUE", "runner_id", "")))

    async def complete(
        self,
        request_id: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        finished: float,
        logs: Sequence[LogEntry] = (),
    ) -> bool:
        headers_text, logs_bytes = json.dumps(headers), encode_logs(logs)
        operation = ("complete", request_id, status, headers_text, body, finished, logs_bytes)
        return bool(await self._writer.send_and_wait(operation))

    def webhook_done(self, request_id: str) -> None:
        self._writer.send(("webhook_done", request_id))

    async def _write(self, operations: list[Operation]) -> list[Any]:
        """One batch in one pipeline; a failed operation's result is its ``StoreUnavailable``."""
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for operation in operations:
            self._queue_operation(pipe, operation)
        try:
            results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            results = [exc] * len(operations)
        return [
            StoreUnavailable(f"queue store {self.url}: {result}")
            if isinstance(result, Exception)
            else result
            for result in results
        ]

    def _queue_operation(self, pipe: Any, operation: Operation) -> None:
        kind = operation[0]
        if kind == "barrier":
            pipe.ping()
            return
        open_key, done_key, bytes_key = (
            self._key("open"),
            self._key("done"),
            self._key("done_bytes"),
        )
        if kind == "accept":
            request: StoredRequest = operation[1]
            keys = [self._key("req", request.id), open_key]
            pipe.eval(ACCEPT, len(keys), *keys, request.id, request.created, *self._fields(request))
            return
        request_key = self._key("req", operation[1])
        if kind == "get":
            pipe.hgetall(request_key)
        elif kind == "update_open":
            pipe.eval(UPDATE_OPEN, 1, request_key, *operation[2], "owner", self.gateway_id)
        elif kind == "complete":
            keys = [request_key, open_key, done_key, bytes_key]
            pipe.eval(COMPLETE, len(keys), *keys, *operation[1:])
        elif kind == "webhook_done":
            keys = [request_key, open_key, done_key, bytes_key]
            pipe.eval(WEBHOOK_DONE, len(keys), *keys, operation[1])

    def _fields(self, request: StoredRequest) -> list[Any]:
        return [
            "path", request.path,
            "headers", json.dumps(request.headers),
            "priority", request.priority,
            "start_timeout", "" if request.start_timeout is None else request.start_timeout,
            "webhook_url", request.webhook_url or "",
            "created", request.created,
            "status", request.status,
            "attempts", request.attempts,
            "body", request.body,
            "webhook_state", request.webhook_state,
            "size", request.size,
            "owner", self.gateway_id,
        ]  # fmt: skip

    # -- reads -------------------------------------------------------------------------------------

    async def get(self, request_id: str) -> StoredRequest | None:
        """In line with the writes: it sees every write sent before it."""
        fields = await self._writer.send_and_wait(("get", request_id))
        return self._record(request_id, fields) if fields else None

    async def take_over(self) -> list[StoredRequest]:
        """Open requests whose gateway's lease is gone, now this gateway's, oldest first."""
        client = self._redis()
        await self._writer.send_and_wait(("barrier",))  # after the writes sent before it
        try:
            claimed = await client.eval(  # type: ignore[misc]
                TAKE_OVER, 1, self._key("open"), self.prefix, self.gateway_id
            )
            if not claimed:
                return []
            pipe = client.pipeline(transaction=False)
            for request_id in claimed:
                pipe.hgetall(self._key("req", request_id.decode()))
            rows = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"queue store {self.url}: {exc}") from exc
        records = [
            self._record(request_id.decode(), fields)
            for request_id, fields in zip(claimed, rows, strict=True)
            if fields
        ]
        return sorted(records, key=lambda record: record.created)

    def _record(self, request_id: str, fields: dict[bytes, bytes]) -> StoredRequest:
        def text(name: str) -> str:
            return fields.get(name.encode(), b"").decode()

        def number(name: str) -> float | None:
            value = text(name)
            return float(value) if value else None

        result_status = text("result_status")
        result_headers = text("result_headers")
        return StoredRequest(
            id=request_id,
            path=text("path"),
            body=fields.get(b"body", b""),
            headers=json.loads(text("headers") or "{}"),
            priority=text("priority") or "normal",
            start_timeout=number("start_timeout"),
            webhook_url=text("webhook_url") or None,
            created=number("created") or 0.0,
            status=text("status"),  # type: ignore[arg-type]
            attempts=int(text("attempts") or 0),
            runner_id=text("runner_id") or None,
            started=number("started"),
            finished=number("finished"),
            result_status=int(result_status) if result_status else None,
            result_headers=json.loads(result_headers) if result_headers else {},
            result_body=fields.get(b"result_body", b""),
            webhook_state=text("webhook_state") or "none",  # type: ignore[arg-type]
            logs=decode_logs(request_id, fields.get(b"logs", b"")),
        )

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreUnavailable("the queue store is not open")
        return self._client

    # -- retention ---------------------------------------------------------------------------------

    async def prune(self, now: float) -> int:
        """Answered requests past the age, then the oldest while they hold too many bytes."""
        client = self._redis()
        await self._writer.send_and_wait(("barrier",))  # after the writes sent before it
        done_key, bytes_key = self._key("done"), self._key("done_bytes")
        forgotten = 0
        try:
            while True:
                old = await client.zrangebyscore(
                    done_key, "-inf", now - self.retention.seconds, start=0, num=PRUNE_CHUNK
                )
                if not old:
                    break
                forgotten += await self._forget(old)
            while (over := int(await client.get(bytes_key) or 0) - self.retention.bytes) > 0:
                oldest = await client.zrange(done_key, 0, PRUNE_CHUNK - 1)
                if not oldest:
                    break
                pipe = client.pipeline(transaction=False)
                for request_id in oldest:
                    pipe.hget(self._key("req", request_id.decode()), "size")
                chosen = []
                for request_id, size in zip(oldest, await pipe.execute(), strict=True):
                    if over <= 0:
                        break
                    chosen.append(request_id)
                    over -= int(size or 0)
                forgotten += await self._forget(chosen)
        except RedisError as exc:
            raise StoreUnavailable(f"queue store {self.url}: {exc}") from exc
        return forgotten

    async def _forget(self, request_ids: list[bytes]) -> int:
        client = self._redis()
        keys = [self._key("req", request_id.decode()) for request_id in request_ids]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "size")
        sizes = await pipe.execute()
        pipe = client.pipeline(transaction=True)
        pipe.delete(*keys)
        pipe.zrem(self._key("done"), *request_ids)
        pipe.decrby(self._key("done_bytes"), sum(int(size or 0) for size in sizes))
        await pipe.execute()
        return len(keys)

    async def size(self) -> StoreSize:
        client = self._redis()
        await self._writer.send_and_wait(("barrier",))
        try:
            pipe = client.pipeline(transaction=False)
            pipe.zcard(self._key("open"))
            pipe.zcard(self._key("done"))
            pipe.info("memory")
            open_count, done_count, memory = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"queue store {self.url}: {exc}") from exc
        return StoreSize(open_count + done_count, int(memory.get("used_memory", 0)))
