"""Dynamic batching: concurrent calls of an endpoint that can run a batch become one call.

A minifal-only helper (LitServe's ``max_batch_size``/``batch_timeout``, Ray Serve's
``@serve.batch``). The decorated function takes a list and returns a list of the same length;
callers call it with one item and get their own result::

    try:
        from minifal.runner.batching import batched
    except ImportError:  # on fal: each call is a batch of one (apps/sd_turbo.py has the shim)
        batched = one_at_a_time

    class App(fal.App):
        max_multiplexing = 16  # >= max_batch_size, or the gateway never sends a batch's worth

        @fal.endpoint("/")
        def generate(self, input: Input) -> Output:
            return self.generate_batch(input)  # blocks this request's thread for its result

        @batched(max_batch_size=16, batch_timeout_ms=5)
        def generate_batch(self, inputs: list[Input]) -> list[Output]: ...

**When a batch starts** (:func:`next_batch`, pure): as soon as ``max_batch_size`` calls wait;
or when the oldest has waited ``batch_timeout_ms``; or at once when the previous batch was of
one (no load: a lone caller pays no window, so sequential latency is unchanged). Calls that
arrive while a batch runs wait for the next one, so under load batches form without any window.

**Errors stay per call.** An item of the returned list that is an exception is raised to that
item's caller only. If the batch function raises for a batch of several, each of its items is
run again alone (a batch of one), so one bad input fails only its own call; a batch of one's
exception goes to its caller. A returned list of the wrong length fails every call of the batch.

**Sync and async.** A ``def`` batch function runs in a worker thread the batcher owns (FastAPI
runs a sync endpoint in its threadpool, whose thread then waits for the result, bounded by
``timeout_s``; an ``async def`` endpoint awaits ``self.f.acall(item)``). An ``async def`` batch
function runs in a task on the caller's event loop; callers ``await self.f(item)``. The worker
starts at the first call and stops at :meth:`close`; the runner closes every batcher of the app
after ``teardown()`` (:func:`close_batchers`), and calls still waiting then are run first.

**Under minifal's gateway** a runner receives at most ``max_multiplexing`` requests at once, so
batches can only be as large as that: set it >= ``max_batch_size``. The gateway's scaler counts
requests in flight (a batch of 16 is 16 requests), so scaling is unchanged by batching.

It is long because both workers are whole here, each with its shutdown: a thread for sync
batch functions, a task for async ones. The pure rules are in ``batch_rules.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from minifal.runner.batch_rules import (
    BatchRules,
    BatchStats,
    Failed,
    NextBatch,
    next_batch,
    outcomes,
)

logger = logging.getLogger("minifal.batching")

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TIMEOUT_S = 600.0  # a caller's wait for its result; fal's request timeout by default
CLOSE_TIMEOUT_S = 30.0


@dataclass
class _Waiting(Generic[T]):
    item: T
    future: Future
    arrived: float


class _BatchQueue(Generic[T]):
    """What both batchers share: the calls waiting, the rules, which calls the next batch takes,
    and how a batch's results (or its error) reach its callers. Each subclass owns the worker
    that runs the batches (a thread or a task) and its wake-up."""

    def __init__(self, rules: BatchRules, name: str, timeout_s: float) -> None:
        self.rules = rules
        self.name = name
        self.timeout_s = timeout_s
        self.stats = BatchStats()
        self._waiting: deque[_Waiting[T]] = deque()
        self._closed = False
        self._previous_batch = 0

    @property
    def waiting(self) -> int:
        """Calls not yet taken into a batch."""
        return len(self._waiting)

    def _decide(self) -> NextBatch | None:
        """The next batch's size or wait; ``None`` once closed with nothing left to run."""
        waiting = self._waiting
        if self._closed:  # run everything still waiting, without windows
            if not waiting:
                return None
            return NextBatch(min(len(waiting), self.rules.max_batch_size), 0.0)
        oldest = time.monotonic() - waiting[0].arrived if waiting else 0.0
        return next_batch(len(waiting), oldest, self._previous_batch, self.rules)

    def _take(self, count: int) -> list[_Waiting[T]]:
        """The ``count`` oldest calls, less those their callers cancelled meanwhile."""
        taken = [self._waiting.popleft() for _ in range(count)]
        batch = [w for w in taken if w.future.set_running_or_notify_cancel()]
        if batch:
            self._previous_batch = len(batch)
            self.stats.count(len(batch))
        return batch

    def _runs_alone(self, batch: list[_Waiting[T]], error: Exception) -> bool:
        """After the batch function raised: whether each item now runs alone (a batch of
        several), or the error was the one caller's answer (a batch of one)."""
        if len(batch) == 1:
            batch[0].future.set_exception(error)
            return False
        logger.warning(
            "batcher %s: a batch of %d raised %r: each item runs alone",
            self.name,
            len(batch),
            error,
        )
        self.stats.retried_alone += len(batch)
        return True

    def _log_stats(self) -> None:
        if self.stats.batches:
            logger.info("batcher %s: %s", self.name, self.stats.summary())


class ThreadBatcher(_BatchQueue[T], Generic[T, R]):
    """Batches of a sync function, run in a worker thread this object owns."""

    def __init__(
        self,
        function: Callable[[list[T]], Sequence[R]],
        rules: BatchRules,
        name: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(rules, name, timeout_s)
        self._function = function
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._worker is not None and self._worker.is_alive()

    def set_max_batch_size(self, max_batch_size: int) -> None:
        with self._condition:
            self.rules = BatchRules(max_batch_size, self.rules.batch_timeout_s)
            self._condition.notify()

    def submit(self, item: T) -> Future:
        future: Future = Future()
        with self._condition:
            if self._closed:
                raise RuntimeError(f"batcher {self.name} is closed")
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name=f"minifal-batch-{self.name}", daemon=True
                )
                self._worker.start()
            self._waiting.append(_Waiting(item, future, time.monotonic()))
            self._condition.notify()
        return future

    def __call__(self, item: T) -> R:
        """The result for ``item``, once its batch ran (blocks the calling thread)."""
        future = self.submit(item)
        try:
            return future.result(timeout=self.timeout_s)
        except TimeoutError:
            future.cancel()  # still waiting: it never runs; already running: its result is lost
            raise

    async def acall(self, item: T) -> R:
        """The same from a coroutine: the event loop is not blocked."""
        future = self.submit(item)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop taking calls; the worker runs those still waiting, then ends (joined, bounded)."""
        with self._condition:
            self._closed = True
            self._condition.notify()
            worker = self._worker
        if worker is not None:
            worker.join(timeout_s)
            if worker.is_alive():
                logger.warning("batcher %s: a batch still runs after %.0f s", self.name, timeout_s)
        self._log_stats()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Waiting[T]] | None:
        with self._condition:
            while True:
                decision = self._decide()
                if decision is None:
                    return None
                if not decision.take:
                    self._condition.wait(decision.wait_s)
                elif batch := self._take(decision.take):
                    return batch

    def _run(self, batch: list[_Waiting[T]]) -> None:
        items = [w.item for w in batch]
        try:
            results = outcomes(self._function(items), len(batch))
        except Exception as error:  # each item gets its own answer below
            if not self._runs_alone(batch, error):
                return
            results = [self._alone(item) for item in items]
        _answer(batch, results)

    def _alone(self, item: T) -> Any:
        try:
            return outcomes(self._function([item]), 1)[0]
        except Exception as error:  # this item's own error
            return Failed(error)


class AsyncBatcher(_BatchQueue[T], Generic[T, R]):
    """Batches of an async function, run by a task on the event loop of the first caller."""

    def __init__(
        self,
        function: Callable[[list[T]], Awaitable[Sequence[R]]],
        rules: BatchRules,
        name: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(rules, name, timeout_s)
        self._function = function
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        """Whether the worker task is alive."""
        return self._task is not None and not self._task.done()

    def set_max_batch_size(self, max_batch_size: int) -> None:
        self.rules = BatchRules(max_batch_size, self.rules.batch_timeout_s)
        self._wake()

    async def __call__(self, item: T) -> R:
        if self._closed:
            raise RuntimeError(f"batcher {self.name} is closed")
        if self._task is None:
            self._changed = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._work(), name=f"minifal-batch-{self.name}"
            )
        future: Future = Future()
        self._waiting.append(_Waiting(item, future, time.monotonic()))
        self._wake()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    acall = __call__

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop taking calls; the task runs those still waiting, then ends (bounded)."""
        self._closed = True
        self._wake()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                logger.warning("batcher %s: cancelled after %.0f s", self.name, timeout_s)
        self._log_stats()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _work(self) -> None:
        assert self._changed is not None
        while True:
            decision = self._decide()
            if decision is None:
                return
            if not decision.take:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), decision.wait_s)
            elif batch := self._take(decision.take):
                await self._run(batch)

    async def _run(self, batch: list[_Waiting[T]]) -> None:
        items = [w.item for w in batch]
        try:
            results = outcomes(await self._function(items), len(batch))
        except Exception as error:  # each item gets its own answer below
            if not self._runs_alone(batch, error):
                return
            results = [await self._alone(item) for item in items]
        _answer(batch, results)

    async def _alone(self, item: T) -> Any:
        try:
            return outcomes(await self._function([item]), 1)[0]
        except Exception as error:  # this item's own error
            return Failed(error)


def _answer(batch: list[_Waiting[Any]], results: list[Any]) -> None:
    """Each caller gets its own result, or its own item's error."""
    for waiting, outcome in zip(batch, results, strict=True):
        if isinstance(outcome, Failed):
            waiting.future.set_exception(outcome.error)
        else:
            waiting.future.set_result(outcome)


Batcher = ThreadBatcher | AsyncBatcher


class batched:  # lower case: a decorator, like functools.cached_property
    """``@batched(max_batch_size=8, batch_timeout_ms=5.0)`` on a method (or a function) that
    takes a list of items and returns a list of results; see the module docstring.

    Each instance gets its own batcher, made at first access and kept in the instance's
    ``__dict__`` under the method's name.
    """

    def __init__(
        self,
        max_batch_size: int = 8,
        batch_timeout_ms: float = 5.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.rules = BatchRules(max_batch_size, batch_timeout_ms / 1000)
        self.timeout_s = timeout_s
        self._function: Callable[..., Any] | None = None
        self._name = ""
        self._unbound: Batcher | None = None
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        if self._function is None:  # the decoration itself
            (function,) = args
            self._function = function
            self._name = function.__name__
            functools.update_wrapper(self, function)
            return self
        with self._lock:  # a plain function: one batcher for the whole process
            if self._unbound is None:
                self._unbound = self._batcher(self._function)
        return self._unbound(*args)

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        with self._lock:
            batcher = instance.__dict__.get(self._name)
            if batcher is None:
                assert self._function is not None
                batcher = self._batcher(functools.partial(self._function, instance))
                instance.__dict__[self._name] = batcher
        return batcher

    def _batcher(self, function: Callable[..., Any]) -> Batcher:
        assert self._function is not None
        kind = AsyncBatcher if inspect.iscoroutinefunction(self._function) else ThreadBatcher
        return kind(function, self.rules, self._name, self.timeout_s)


async def close_batchers(owner: Any) -> None:
    """Close every batcher ``owner`` (an App instance) made: the runner calls this after
    ``teardown()``. A thread batcher's join runs off the event loop."""
    for value in list(vars(owner).values()):
        if isinstance(value, AsyncBatcher):
            await value.aclose()
        elif isinstance(value, ThreadBatcher):
            await asyncio.to_thread(value.close)
