"""``DistributedRunner``: start ``world_size`` worker processes and call them, as fal does.

In the App's ``setup()``: ``self.runner = DistributedRunner(worker_cls=MyWorker,
world_size=self.num_gpus)`` then ``await self.runner.start(**setup_kwargs)``. In an endpoint:
``await self.runner.invoke(payload)`` for rank 0's result, or ``self.runner.stream(payload,
as_text_events=True)`` for the items rank 0 streams, then its result.

Calls run one at a time, in order, on every rank. Every wait is bounded: ``start`` by its
``timeout``, ``stop``/``terminate`` by theirs, ``invoke``/``stream`` by their timeouts and by
the workers' lives; a worker that dies fails the call at once with ``DistributedWorkerCrashed``
(and, in a minifal runner, stops that runner so that it is restarted: ``runner_crash``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from minifal.distributed.class_reference import ClassReference
from minifal.distributed.distributed_worker import DistributedWorker
from minifal.distributed.errors import DistributedWorkerCrashed
from minifal.distributed.group_inbox import Crashed, Finished
from minifal.distributed.keepalive import KeepAliveTimer
from minifal.distributed.process_group import choose_backend, host_rendezvous_store
from minifal.distributed.protocol import Result, StreamItem, WorkerPlan
from minifal.distributed.runner_crash import fail_runner_process
from minifal.distributed.serialization import distributed_deserialize, distributed_serialize
from minifal.distributed.worker_group import WorkerGroup

logger = logging.getLogger("minifal.distributed")

NO_PAYLOAD: Mapping[str, Any] = MappingProxyType({})
LOCK_POLL_S = 0.01


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class DistributedRunner:
    zmq_socket: None
    """fal's ZeroMQ socket to its workers. minifal's runner talks to them over pipes: None."""
    context: WorkerGroup | None
    """The worker processes of the last ``start()`` (``context.processes``), as in fal."""
    keepalive_timer: KeepAliveTimer | None

    def __init__(
        self,
        worker_cls: type[DistributedWorker] = DistributedWorker,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int = 29500,
        worker_addr: str = "127.0.0.1",
        worker_port: int | None = None,
        timeout: int = 86400,
        keepalive_payload: Mapping[str, Any] = NO_PAYLOAD,
        keepalive_interval: int | float | None = None,
        cwd: str | Path | None = None,
        set_device: bool | None = None,
    ) -> None:
        self.worker_cls = worker_cls
        self.world_size = world_size
        self.master_addr = master_addr
        self.master_port = master_port
        self.worker_addr = worker_addr  # fal's ZeroMQ address: unused here (pipes)
        self.worker_port = worker_port
        self.timeout = timeout
        self.cwd = cwd
        self.zmq_socket = None
        self.context = None
        self.keepalive_payload = dict(keepalive_payload)
        self.keepalive_interval = keepalive_interval
        self.keepalive_timer = None
        self._lock = threading.Lock()
        self._keepalive_shutdown = False
        if set_device is not None:
            warnings.warn(
                "set_device is deprecated and will be removed in the future.", stacklevel=2
            )

    # -- state --

    def is_alive(self) -> bool:
        """Whether the worker processes run (started, not stopped, none of them dead)."""
        return self.context is not None and self.context.is_alive()

    def ensure_alive(self) -> None:
        if self.is_alive():
            return
        if self.context is not None and self.context.crash is not None:
            raise DistributedWorkerCrashed(str(self.context.crash))
        raise RuntimeError(f"Distributed processes are not running. Errors: {self.gather_errors()}")

    def gather_errors(self) -> list[Exception]:
        """The errors the workers reported since the last call (setup failures, crashes)."""
        return [] if self.context is None else self.context.take_errors()

    # -- fal's ZeroMQ plumbing: not used here --

    def get_zmq_socket(self) -> NoReturn:
        raise RuntimeError(
            "minifal's DistributedRunner talks to its worker processes over pipes: there is "
            "no ZeroMQ socket"
        )

    def close_zmq_socket(self) -> None:
        """Nothing to close: minifal's runner has no ZeroMQ socket."""

    def run(self, **kwargs: Any) -> NoReturn:
        """fal's body of each worker process. minifal's worker processes run
        ``minifal.distributed.worker_process.main``; use ``start()``."""
        raise RuntimeError(
            "DistributedRunner.run() is what each worker process runs; call start() instead"
        )

    # -- lifecycle --

    async def start(self, timeout: int = 1800, **kwargs: Any) -> None:
        """Spawn ``world_size`` workers, run their ``setup(**kwargs)``, wait until all are ready
        (at most ``timeout`` seconds)."""
        if self.is_alive():
            raise RuntimeError("Distributed processes are already running.")
        if self.context is not None:
            self.terminate()
        self._keepalive_shutdown = False
        try:
            group = self._new_group(kwargs)
            self.context = group
            await asyncio.to_thread(group.launch)
            seconds = await group.wait_ready(timeout)
        except asyncio.CancelledError:
            self.terminate()
            raise
        except Exception as exc:
            self.terminate()
            raise RuntimeError(f"Failed to start distributed processes: {exc}") from exc
        logger.info("%d distributed workers ready in %.1f s", self.world_size, seconds)
        self.maybe_start_keepalive()

    def _new_group(self, setup_kwargs: dict[str, Any]) -> WorkerGroup:
        backend = choose_backend(self.world_size)
        store = host_rendezvous_store(self.master_addr, self.master_port)
        if store.port != self.master_port:
            logger.info(
                "port %d is taken: the process group meets on %d", self.master_port, store.port
            )
        plan = WorkerPlan(
            worker_class=ClassReference.of(self.worker_cls),
            world_size=self.world_size,
            backend=backend,
            master_addr=self.master_addr,
            master_port=store.port,
            timeout_s=float(self.timeout),
            cwd=str(self.cwd) if self.cwd is not None else None,
            parent_pid=os.getpid(),
        )
        where = "GPUs cuda:0.." + str(self.world_size - 1) if backend == "nccl" else "CPU"
        logger.info(
            "starting %d distributed workers of %s (%s on %s)",
            self.world_size,
            self.worker_cls.__qualname__,
            backend,
            where,
        )
        return WorkerGroup(plan, setup_kwargs, on_crash=fail_runner_process, store=store)

    async def stop(self, timeout: int = 10) -> None:
        """Each worker runs ``teardown()`` and exits; those still there after ``timeout`` are
        killed."""
        if not self.is_alive():
            raise RuntimeError("Distributed processes are not running.")
        self._shutdown_keepalive()
        assert self.context is not None
        await self.context.stop(timeout)

    def terminate(self, timeout: int | float = 10) -> None:
        """Kill the worker processes now (SIGTERM, SIGKILL after ``timeout``) and reap them."""
        self._shutdown_keepalive()
        if self.context is not None:
            self.context.kill(timeout)

    async def __aenter__(self) -> DistributedRunner:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc_value: Any, exc_traceback: Any) -> None:
        try:
            await self.stop()
        except Exception as exc:
            print(f"[debug] Error during cleanup: {exc}\n{traceback.format_exc()}")

    # -- calls --

    async def invoke(
        self, payload: Mapping[str, Any] = NO_PAYLOAD, timeout: int | None = None
    ) -> Any:
        """Run every worker's ``__call__(streaming=False, **payload)``; rank 0's return value.

        As in fal, a ``__call__`` that raises on rank 0 makes the result ``{"error": str(e)}``.
        ``timeout`` bounds the whole call, waiting for an earlier call included.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        message = f"Invocation timed out after {timeout} seconds."
        async with self._invocation_lock(deadline, message):
            self.ensure_alive()
            self.maybe_cancel_keepalive()
            result: bytes | None = None
            events = self._call(payload, False, False, deadline, None, message, None)
            async with aclosing(events) as received:
                async for event in received:
                    if isinstance(event, Result):
                        result = event.data
            if result is None:
                raise RuntimeError("No result was returned by the worker of rank 0.")
            self.maybe_start_keepalive()
            return distributed_deserialize(result)

    async def stream(
        self,
        payload: Mapping[str, Any] = NO_PAYLOAD,
        timeout: int | None = None,
        streaming_timeout: int | None = None,
        as_text_events: bool = False,
    ) -> AsyncIterator[Any]:
        """Run every worker's ``__call__(streaming=True, **payload)``; yield what rank 0 streams
        with ``add_streaming_result``, then its return value. ``as_text_events``: each item is a
        Server-Sent Event (bytes) for a ``StreamingResponse``. ``streaming_timeout`` bounds the
        wait between two items, ``timeout`` the whole stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        message = f"Streaming timed out after {timeout} seconds."
        async with self._invocation_lock(deadline, message):
            self.ensure_alive()
            self.maybe_cancel_keepalive()
            yielded = False
            idle = f"Streaming timed out after {streaming_timeout} seconds of inactivity."
            events = self._call(
                payload, True, as_text_events, deadline, streaming_timeout, message, idle
            )
            async with aclosing(events) as received:
                async for event in received:
                    yielded = True
                    yield event.data if as_text_events else distributed_deserialize(event.data)
            if not yielded:
                raise RuntimeError("No data was yielded from the worker.")
            self.maybe_start_keepalive()

    async def _call(
        self,
        payload: Mapping[str, Any],
        streaming: bool,
        as_text_events: bool,
        deadline: float | None,
        idle_timeout: float | None,
        timeout_message: str,
        idle_message: str | None,
    ) -> AsyncIterator[StreamItem | Result]:
        """Send one call to every rank; yield rank 0's items and result until all ranks are
        done. Raises on a crash of the workers and on either timeout."""
        group = self.context
        assert group is not None
        loop = asyncio.get_running_loop()
        call = group.open_call(loop)
        try:
            encoded = distributed_serialize(dict(payload), is_final=True)
            await loop.run_in_executor(
                None, group.send_call, call, encoded, streaming, as_text_events
            )
            while True:
                remaining = _remaining(deadline)
                wait = remaining
                if idle_timeout is not None and (wait is None or idle_timeout < wait):
                    wait = idle_timeout
                try:
                    event = await call.inbox.get(wait)
                except TimeoutError:
                    timed_out_overall = remaining is not None and wait == remaining
                    message = timeout_message if timed_out_overall else idle_message
                    raise TimeoutError(message) from None
                if isinstance(event, Crashed):
                    raise DistributedWorkerCrashed(str(event.error))
                if isinstance(event, Finished):
                    for rank, error in sorted(event.rank_errors.items()):
                        if rank != 0:
                            logger.warning("rank %d failed in __call__: %s", rank, error)
                    return
                yield event
        finally:
            group.close_call(call)

    @asynccontextmanager
    async def _invocation_lock(
        self, deadline: float | None, timeout_message: str
    ) -> AsyncIterator[None]:
        """One call at a time, across event loops (keepalive runs on its own). Polled, so that
        a cancelled waiter never holds it; bounded by the call's deadline."""
        while not self._lock.acquire(blocking=False):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(timeout_message)
            await asyncio.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            self._lock.release()

    # -- keepalive --

    def keepalive(self, timeout: int | float | None = 60.0) -> None:
        """Call the workers with ``keepalive_payload`` (from the keepalive timer's thread)."""
        if self._keepalive_shutdown:
            return
        self.maybe_cancel_keepalive()
        try:
            seconds = None if timeout is None else int(timeout)
            asyncio.run(self.invoke(self.keepalive_payload, timeout=seconds))
        except Exception as exc:
            logger.error("keepalive failed: %s", exc)
            raise RuntimeError("Failed to run keepalive.") from exc
        finally:
            self.maybe_start_keepalive()

    def maybe_start_keepalive(self) -> None:
        if self._keepalive_shutdown:
            return
        if self.keepalive_timer is None and self.keepalive_interval is not None:
            self.keepalive_timer = KeepAliveTimer(
                self.keepalive, self.keepalive_interval, start=True
            )

    def maybe_reset_keepalive(self) -> None:
        if self.keepalive_timer is not None:
            self.keepalive_timer.reset()

    def maybe_cancel_keepalive(self) -> None:
        if self.keepalive_timer is not None:
            self.keepalive_timer.cancel()
            self.keepalive_timer = None

    def _shutdown_keepalive(self) -> None:
        self._keepalive_shutdown = True
        self.maybe_cancel_keepalive()
