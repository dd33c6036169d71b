"""The worker processes of one ``DistributedRunner.start()``: spawned, watched and stopped.

One thread owns them. It spawns them (so their parent-death signal follows the life of this
thread, which outlives them), reads every message they send and routes it to the call waiting
for it, and reaps them. An exit nobody asked for is a crash of the whole group: the surviving
workers are stopped, every waiting call fails with ``DistributedWorkerCrashed``, and
``on_crash`` is told (the runner process then fails, so that its fleet restarts it). A call on
which one rank raised while the others are still busy after ``OUT_OF_STEP_GRACE_S`` is a crash
too: those ranks are stuck in a collective the failed rank will never join.

Other threads ask and wait: ``open_call``/``send_call``, ``wait_ready``, ``stop``, ``kill``.
Every wait is bounded.

What a waiting thread receives (its ``Inbox`` and the events put in it) is ``group_inbox.py``.
Over 400 lines, long because the owning thread's loop, the routing of messages and the crash
rules share one lock and one state; split apart, each part would reach into the others.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import itertools
import logging
import multiprocessing
import signal
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from minifal.distributed import worker_process
from minifal.distributed.errors import DistributedWorkerCrashed
from minifal.distributed.group_inbox import AllReady, Crashed, Finished, Inbox, PendingCall
from minifal.distributed.protocol import (
    Call,
    CallDone,
    Exit,
    Ready,
    Result,
    Setup,
    StreamItem,
    WorkerFailed,
    WorkerPlan,
)

logger = logging.getLogger("minifal.distributed")

WATCH_INTERVAL_S = 0.5
SPAWN_TIMEOUT_S = 120.0
KILL_GRACE_S = 5.0
OUT_OF_STEP_GRACE_S = 60.0
EXIT_STOP_TIMEOUT_S = 10.0

_live_groups: weakref.WeakSet[WorkerGroup] = weakref.WeakSet()
_exit_hook_installed = False


class GroupState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    """Exits are expected from here on: a stop, a kill, or the aftermath of a crash."""
    CLOSED = "closed"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerGroup:
    def __init__(
        self,
        plan: WorkerPlan,
        setup_kwargs: dict[str, Any],
        on_crash: Callable[[DistributedWorkerCrashed], None],
        store: Any = None,
    ) -> None:
        self.plan = plan
        self.processes: list[BaseProcess] = []
        self.errors: list[Exception] = []
        self.crash: DistributedWorkerCrashed | None = None
        self.state = GroupState.STARTING
        self._setup_kwargs = setup_kwargs
        self._on_crash = on_crash
        self._store = store  # the rendezvous store: served while the workers live
        self._connections: dict[int, Connection] = {}
        self._exit_codes: dict[int, int | None] = {}
        self._last_words: dict[int, WorkerFailed] = {}
        self._ready: set[int] = set()
        self._started_at = time.monotonic()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._calls: dict[int, PendingCall] = {}
        self._start_waiters: list[Inbox] = []
        self._call_ids = itertools.count(1)
        self._wake_reader, self._wake_writer = multiprocessing.Pipe(duplex=False)
        self._kill_after: float | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- asked by other threads --

    def launch(self) -> None:
        """Start the owner thread and wait (bounded) until it spawned every worker."""
        _stop_at_exit(self)
        spawned = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._own, args=(spawned, failure), name="minifal-distributed", daemon=True
        )
        self._thread.start()
        if not spawned.wait(SPAWN_TIMEOUT_S):
            self.kill(KILL_GRACE_S)
            raise TimeoutError(f"spawning the worker processes took over {SPAWN_TIMEOUT_S} s")
        if failure:
            raise failure[0]

    def is_alive(self) -> bool:
        return self.state in (GroupState.STARTING, GroupState.RUNNING)

    async def wait_ready(self, timeout: float) -> float:
        """Seconds every rank took to say ``Ready``; TimeoutError or the crash otherwise."""
        inbox = Inbox(asyncio.get_running_loop())
        with self._lock:
            if self.crash is not None:
                raise self.crash
            if self.state is GroupState.RUNNING:
                return time.monotonic() - self._started_at
            self._start_waiters.append(inbox)
        try:
            event = await inbox.get(timeout)
        except TimeoutError:
            raise TimeoutError(
                f"Timeout reached after {timeout} seconds while waiting for workers to be ready."
            ) from None
        if isinstance(event, Crashed):
            raise event.error
        return event.seconds

    def open_call(self, loop: asyncio.AbstractEventLoop) -> PendingCall:
        with self._lock:
            if self.state is not GroupState.RUNNING:
                raise self.crash or RuntimeError("Distributed processes are not running.")
            call = PendingCall(next(self._call_ids), Inbox(loop), set(range(self.plan.world_size)))
            self._calls[call.call_id] = call
            return call

    def send_call(
        self, call: PendingCall, payload: bytes, streaming: bool, as_text_events: bool
    ) -> None:
        """Send the call to every rank (blocking while a busy rank's pipe is full: run it off
        the event loop). A rank that is gone is the owner thread's to report."""
        self._send_all(Call(call.call_id, payload, streaming, as_text_events))

    def close_call(self, call: PendingCall) -> None:
        """The caller is done with it (finished, failed, timed out or cancelled): later messages
        of this call are dropped."""
        with self._lock:
            self._calls.pop(call.call_id, None)

    async def stop(self, timeout: float) -> None:
        await asyncio.to_thread(self.shutdown, timeout)

    def shutdown(self, timeout: float) -> None:
        """Ask every rank to tear down and exit; kill those still there after ``timeout``."""
        with self._lock:
            if self.state in (GroupState.STARTING, GroupState.RUNNING):
                self.state = GroupState.STOPPING
        deadline = time.monotonic() + timeout
        # A rank too busy to read its pipe could block the send: it gets killed below.
        sender = threading.Thread(target=self._send_all, args=(Exit(),), daemon=True)
        sender.start()
        sender.join(timeout)
        if not self._closed.wait(max(0.0, deadline - time.monotonic())):
            logger.warning("distributed workers did not exit within %s s: killing them", timeout)
            self.kill(KILL_GRACE_S)

    def kill(self, timeout: float) -> None:
        """SIGTERM every worker, SIGKILL those alive ``timeout`` later; wait until reaped."""
        with self._lock:
            if self.state is not GroupState.CLOSED:
                self.state = GroupState.STOPPING
            if self._kill_after is None:
                self._kill_after = timeout
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout + 2 * KILL_GRACE_S)
            if self._thread.is_alive():
                logger.error("the distributed workers' owner thread did not finish")

    def take_errors(self) -> list[Exception]:
        with self._lock:
            errors, self.errors = self.errors, []
            return errors

    # -- the owner thread --

    def _own(self, spawned: threading.Event, failure: list[BaseException]) -> None:
        try:
            try:
                self._spawn()
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                spawned.set()
            self._watch()
        finally:
            self._stop_processes(KILL_GRACE_S)
            self._close()

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        for rank in range(self.plan.world_size):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_process.main,
                args=(rank, self.plan, child_end),
                name=f"distributed-worker-{rank}",
            )
            process.start()
            child_end.close()
            self.processes.append(process)
            with self._lock:
                self._connections[rank] = parent_end
            parent_end.send(Setup(self._setup_kwargs))
        pids = ", ".join(str(process.pid) for process in self.processes)
        logger.info("started %d distributed workers (pids %s)", len(self.processes), pids)

    def _watch(self) -> None:
        while True:
            live = {
                process.sentinel: rank
                for rank, process in enumerate(self.processes)
                if rank not in self._exit_codes
            }
            if not live:
                return
            if self._kill_after is not None:
                self._stop_processes(self._kill_after)
                return
            readers = {connection: rank for rank, connection in self._connections.items()}
            ready = wait([*readers, *live, self._wake_reader], timeout=WATCH_INTERVAL_S)
            for handle in ready:
                if handle in readers:
                    self._receive(readers[handle])
            for handle in ready:
                if handle in live:
                    self._reap(live[handle])
            if self._wake_reader in ready:
                with contextlib.suppress(EOFError, OSError):
                    while self._wake_reader.poll():
                        self._wake_reader.recv_bytes()
            self._check_out_of_step()

    def _receive(self, rank: int) -> None:
        connection = self._connections.get(rank)
        if connection is None:
            return
        try:
            while connection.poll():
                self._route(rank, connection.recv())
        except (EOFError, OSError):
            with self._lock:
                self._connections.pop(rank, None)
            connection.close()

    def _route(self, rank: int, message: Any) -> None:
        if isinstance(message, Ready):
            self._ready.add(rank)
            if len(self._ready) == self.plan.world_size:
                self._all_ready()
        elif isinstance(message, WorkerFailed):
            self._last_words[rank] = message
            with self._lock:
                self.errors.append(RuntimeError(f"rank {rank}: {message.error}"))
        elif isinstance(message, StreamItem | Result):
            with self._lock:
                call = self._calls.get(message.call_id)
            if call is not None and rank == 0:
                call.inbox.put(message)
        elif isinstance(message, CallDone):
            self._rank_done(rank, message)

    def _all_ready(self) -> None:
        seconds = time.monotonic() - self._started_at
        with self._lock:
            if self.state is GroupState.STARTING:
                self.state = GroupState.RUNNING
            waiters, self._start_waiters = self._start_waiters, []
        for inbox in waiters:
            inbox.put(AllReady(seconds))

    def _rank_done(self, rank: int, message: CallDone) -> None:
        with self._lock:
            call = self._calls.get(message.call_id)
            if call is None:
                return
            call.busy_ranks.discard(rank)
            if message.error is not None:
                call.rank_errors[rank] = message.error
                if call.busy_ranks and call.out_of_step_at is None:
                    call.out_of_step_at = time.monotonic() + OUT_OF_STEP_GRACE_S
            if call.busy_ranks:
                return
            del self._calls[call.call_id]
        call.inbox.put(Finished(dict(call.rank_errors)))

    def _check_out_of_step(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._calls.values() if c.out_of_step_at and c.out_of_step_at < now]
        if late:
            call = late[0]
            failed = ", ".join(f"rank {r} ({e})" for r, e in sorted(call.rank_errors.items()))
            busy = ", ".join(str(rank) for rank in sorted(call.busy_ranks))
            self._crashed(
                DistributedWorkerCrashed(
                    f"{failed} failed in __call__ and rank(s) {busy} did not finish within "
                    f"{OUT_OF_STEP_GRACE_S:g} s: the distributed workers are out of step"
                )
            )

    def _reap(self, rank: int) -> None:
        process = self.processes[rank]
        self._receive(rank)  # its last words, if it had time to say them
        process.join(KILL_GRACE_S)  # its sentinel is ready: this reaps it
        self._exit_codes[rank] = process.exitcode
        if self.state in (GroupState.STARTING, GroupState.RUNNING):
            message = f"distributed worker rank {rank} (pid {process.pid}) "
            message += describe_exit(process.exitcode)
            last_words = self._last_words.get(rank)
            if last_words is not None:
                message += f" after an error in {last_words.stage}: {last_words.error}"
            self._crashed(DistributedWorkerCrashed(message))

    def _crashed(self, error: DistributedWorkerCrashed) -> None:
        """Stop the survivors first (no orphans), then fail every waiter, then tell the runner."""
        with self._lock:
            was_running = self.state is GroupState.RUNNING
            self.state = GroupState.STOPPING
            self.crash = error
            self.errors.append(error)
        logger.error("%s: stopping the other distributed workers", error)
        self._stop_processes(KILL_GRACE_S)
        with self._lock:
            waiters = [call.inbox for call in self._calls.values()] + self._start_waiters
            self._calls.clear()
            self._start_waiters = []
        for inbox in waiters:
            inbox.put(Crashed(error))
        if was_running:
            self._on_crash(error)

    def _stop_processes(self, grace: float) -> None:
        """SIGTERM the live workers, SIGKILL those alive ``grace`` later; reap them (bounded)."""
        for rank in self._alive_ranks():
            with contextlib.suppress(OSError):
                self.processes[rank].terminate()
        self._reap_within(grace)
        for rank in self._alive_ranks():
            with contextlib.suppress(OSError):
                self.processes[rank].kill()
        self._reap_within(KILL_GRACE_S)
        for rank in self._alive_ranks():
            logger.error("distributed worker rank %d survived SIGKILL", rank)

    def _alive_ranks(self) -> list[int]:
        return [rank for rank in range(len(self.processes)) if rank not in self._exit_codes]

    def _reap_within(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for rank in self._alive_ranks():
            process = self.processes[rank]
            process.join(max(0.05, deadline - time.monotonic()))
            if process.exitcode is not None:
                self._exit_codes[rank] = process.exitcode

    def _close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in [*connections, self._wake_reader, self._wake_writer]:
            connection.close()
        self._store = None
        with self._lock:
            self.state = GroupState.CLOSED
            waiters = [call.inbox for call in self._calls.values()] + self._start_waiters
            self._calls.clear()
            self._start_waiters = []
        error = self.crash or DistributedWorkerCrashed("the distributed workers were stopped")
        for inbox in waiters:
            inbox.put(Crashed(error))
        self._closed.set()

    # -- plumbing --

    def _send_all(self, message: Any) -> None:
        with self._lock:
            connections = list(self._connections.values())
        with self._send_lock:
            for connection in connections:
                with contextlib.suppress(OSError, ValueError):
                    connection.send(message)

    def _wake(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._wake_writer.send_bytes(b"!")


def _stop_at_exit(group: WorkerGroup) -> None:
    """Worker processes never outlive an interpreter that exits without stopping them: at exit
    they tear down (``teardown()``) and exit, or are killed after ``EXIT_STOP_TIMEOUT_S``. The
    hook is installed after ``multiprocessing``'s, so it runs first: that one would wait for
    the workers forever."""
    global _exit_hook_installed
    _live_groups.add(group)
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_stop_live_groups)


def _stop_live_groups() -> None:
    for group in list(_live_groups):
        if group.state is not GroupState.CLOSED:
            group.shutdown(EXIT_STOP_TIMEOUT_S)
