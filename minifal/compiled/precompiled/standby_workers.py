"""``StandbyWorkers``: compile worker processes started before their jobs, to hide their imports.

A worker process spends 10-12 s importing torch and Inductor on an H100 host before it can
compile (``benchmarks/sd_turbo_import_probe.py``). Started when its graph is captured, that is
10-12 s more before each compiled signature switches in. So the compile pool starts its
``count`` workers when the ``precompiled_modules`` block opens: their imports overlap the app's
own pipeline load and eager warmup, and a captured graph goes to one that waits for its job
(or still imports: it starts the job when done). Each worker taken is replaced at once by a new
one, while the block may still hand out jobs: never more than ``count`` wait at once, beside
those compiling.

When are they stopped? When nothing more will be handed out (the pool's ``retire()``: the block
ended with nothing to compile, the switchover captured its last graph, the pool was aborted) and
as soon as the store load says this runner most likely compiles nothing: the store held this
key's artifacts, or another runner holds the compile lease (``WarmLoader``'s ``on_covered``).
That is cheap to know (the store load comes first in the block, in the loader's thread) and
spares a warm runner's cores the workers' imports; a signature the store still lacks then gets
a worker started on the spot, as before standby workers. Starting them only once the store load
says a compile is coming would cost most of the overlap: on a cold runner the load ends within
a second of the block's start.

Every worker process is started by this object's own thread: Linux sends a child its parent
death signal when the *thread* that forked it exits (``host/parent_death.py``), and the threads
that open the block (the app's ``setup()`` thread, from a pool that retires idle threads) and
that hand out jobs (the switchover's) end before the workers do. ``close()`` ends the thread; the
pool calls it once every worker it handed a job to has ended.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from minifal.compiled.precompiled.compile_workers import WorkerProcess
from minifal.compiled.precompiled.graph_compile import NotPrecompilable

logger = logging.getLogger("minifal.precompiled")

JOIN_TIMEOUT_S = 10.0


class StandbyWorkers:
    """Up to ``count`` worker processes waiting for a job, in ``job_dir``, with ``threads``
    compile threads each."""

    def __init__(self, count: int, job_dir: Path, threads: int) -> None:
        self.count = count
        self._job_dir = job_dir
        self._threads = threads
        self._waiting: list[WorkerProcess] = []  # started, no job yet; oldest first
        self._starting = 0  # replacements asked of the thread, not started yet
        self._replacing = False  # from start() to retire(): taken workers are replaced
        self._closed = False
        self._changed = threading.Condition()
        self._requests: queue.SimpleQueue[Future[WorkerProcess] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._start_workers, name="minifal-compile-workers", daemon=True
        )

    def start(self) -> None:
        """Start the thread and ``count`` workers."""
        self._replacing = True
        self._thread.start()
        for _ in range(self.count):
            self._replace()

    @property
    def pids(self) -> list[int]:
        """The waiting workers' process ids (tests)."""
        with self._changed:
            return [worker.pid for worker in self._waiting]

    def take(self, deadline: float) -> WorkerProcess:
        """A worker for a job: one that waits (the oldest, furthest in its imports) or, with
        none, one started now; a replacement starts. NotPrecompilable after ``close()``."""
        with self._changed:
            if self._closed:
                raise NotPrecompilable("the compile pool is closed")
            # a replacement on its way comes before a worker started now
            self._changed.wait_for(
                lambda: self._waiting or not self._starting or not self._replacing,
                max(0.0, deadline - time.time()),
            )
            worker = self._waiting.pop(0) if self._waiting else None
            replace = self._replacing
        if worker is None:
            worker = self._start_now(deadline)
        if replace:
            self._replace()
        return worker

    def retire(self) -> None:
        """No more jobs are expected: stop the waiting workers, replace none. A later ``take()``
        still gets a worker, started then."""
        with self._changed:
            self._replacing = False
            waiting, self._waiting = self._waiting, []
            self._changed.notify_all()
        for worker in waiting:
            worker.stop()
        if waiting:
            logger.debug("precompiled: %d standby compile worker(s) stopped", len(waiting))

    def close(self) -> None:
        """``retire()``, and end the thread (every worker with a job has ended: the caller's
        word)."""
        self.retire()
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._requests.put(None)
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT_S)

    def _replace(self) -> None:
        """Ask the thread for a worker that joins the waiting ones (if still wanted then)."""
        future: Future[WorkerProcess] = Future()
        future.add_done_callback(self._started)
        with self._changed:
            if self._closed:
                return
            self._starting += 1
            self._requests.put(future)  # under the lock: before close()'s end of requests

    def _started(self, future: Future[WorkerProcess]) -> None:
        """A replacement has started (in the thread): it waits, or stops if not wanted now."""
        failure = future.exception()
        worker = None if failure is not None else future.result()
        if failure is not None:
            logger.warning("precompiled: a compile worker did not start (%s)", failure)
        with self._changed:
            self._starting -= 1
            if worker is not None and self._replacing:
                self._waiting.append(worker)
                worker = None
            self._changed.notify_all()
        if worker is not None:  # retired meanwhile
            worker.stop()

    def _start_now(self, deadline: float) -> WorkerProcess:
        future: Future[WorkerProcess] = Future()
        with self._changed:
            if self._closed:
                raise NotPrecompilable("the compile pool is closed")
            self._requests.put(future)
        try:
            return future.result(timeout=max(0.0, deadline - time.time()))
        except TimeoutError as exc:
            future.add_done_callback(_stop_started)  # should it start after all
            raise NotPrecompilable("no compile worker started by the deadline") from exc
        except OSError as exc:
            raise NotPrecompilable(f"the compile worker did not start ({exc})") from exc

    def _start_workers(self) -> None:
        """The thread: start a worker per request, until ``close()`` (whose end of requests
        comes after every request: both are put under the lock)."""
        while (future := self._requests.get()) is not None:
            try:
                future.set_result(WorkerProcess(self._job_dir, self._threads))
            except BaseException as exc:
                future.set_exception(exc)


def _stop_started(future: Future[WorkerProcess]) -> None:
    if future.exception() is None:
        future.result().stop()
