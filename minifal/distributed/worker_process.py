"""The life of one worker process (one rank), from spawn to exit.

1. Die with the runner process (parent-death signal), ignore Ctrl-C (the runner owns our life),
   set ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... and the working directory.
2. Import the worker class, receive ``start()``'s keywords, join the process group, build the
   worker and run its ``setup()``; then say ``Ready``.
3. Run calls as the runner sends them, until ``Exit`` (or the runner's pipe closes).
4. ``teardown()``, leave the process group, exit 0.

An exception in 2 or 3 is sent to the runner as the process's last words before it exits 1.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from minifal.distributed.distributed_worker import DistributedWorker
from minifal.distributed.process_group import (
    join_process_group,
    leave_process_group,
    set_rank_environment,
)
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
from minifal.distributed.serialization import (
    distributed_deserialize,
    distributed_serialize,
    encode_text_event,
)
from minifal.host.parent_death import die_with_parent

STREAM_POLL_SECONDS = 0.1


def main(rank: int, plan: WorkerPlan, connection: Connection) -> None:
    """The target of each spawned worker process."""
    _die_with_parent(plan.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_rank_environment(rank, plan.world_size, plan.master_addr, plan.master_port)
    if plan.cwd:
        os.chdir(plan.cwd)
    try:
        worker = _start_worker(rank, plan, connection)
    except BaseException as exc:
        _last_words(connection, rank, "setup", exc)
        sys.exit(1)
    connection.send(Ready())
    try:
        _serve_calls(worker, connection)
        worker.rank_print("Worker is tearing down.", debug=True)
        worker.shutdown()
        leave_process_group()
    except BaseException as exc:
        _last_words(connection, rank, "serving", exc)
        sys.exit(1)


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the runner's owning thread dies, so that no worker outlives its runner."""
    die_with_parent(signal.SIGKILL)()
    if os.getppid() != parent_pid:  # the runner died before the signal was armed
        os._exit(1)


def _last_words(connection: Connection, rank: int, stage: str, exc: BaseException) -> None:
    print(f"[rank {rank}] worker failed during {stage}:\n{traceback.format_exc()}", flush=True)
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    with contextlib.suppress(OSError, ValueError):
        connection.send(WorkerFailed(stage, summary))


def _start_worker(rank: int, plan: WorkerPlan, connection: Connection) -> DistributedWorker:
    worker_class = plan.worker_class.resolve()
    setup = connection.recv()
    if not isinstance(setup, Setup):
        raise RuntimeError(f"expected the setup message, got {type(setup).__name__}")
    join_process_group(
        rank,
        plan.world_size,
        plan.backend,
        plan.timeout_s,
        store_address=(plan.master_addr, plan.master_port),
    )
    worker = worker_class(rank, plan.world_size)
    worker.initialize(**setup.kwargs)
    return worker


def _serve_calls(worker: DistributedWorker, connection: Connection) -> None:
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return  # the runner is gone
        if isinstance(message, Exit):
            return
        if isinstance(message, Call):
            _run_call(worker, message, connection)


def _run_call(worker: DistributedWorker, call: Call, connection: Connection) -> None:
    """One call on this rank: stream rank 0's items while ``__call__`` runs, then its result;
    every rank then says ``CallDone``, with its error if ``__call__`` raised."""
    payload = distributed_deserialize(call.payload)
    payload["streaming"] = call.streaming
    image_format = payload.get("image_format", "jpeg")
    text = call.streaming and call.as_text_events
    _discard_queued(worker)
    worker.streams_text_events = text
    error: str | None = None
    try:
        future = worker.run_in_worker(worker.__call__, **payload)
        while not future.done():
            _forward_items(worker, call, connection, STREAM_POLL_SECONDS)
        result = future.result()
    except Exception as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        worker.rank_print(f"Error in execution: {error}\n{traceback.format_exc()}")
        result = {"error": str(exc)}
    finally:
        worker.streams_text_events = None
    _forward_items(worker, call, connection, 0)
    if worker.rank == 0:
        connection.send(Result(call.call_id, _encode_result(result, text, image_format)))
    connection.send(CallDone(call.call_id, error))


def _encode_result(result: Any, text: bool, image_format: str) -> bytes:
    if text:
        return encode_text_event(result, is_final=True, image_format=image_format)
    return distributed_serialize(result, is_final=True, image_format=image_format)


def _forward_items(
    worker: DistributedWorker, call: Call, connection: Connection, wait: float
) -> None:
    """Send rank 0's queued stream items (other ranks' are dropped, as in fal)."""
    while True:
        try:
            item = worker.queue.get(timeout=wait) if wait else worker.queue.get_nowait()
        except queue.Empty:
            return
        wait = 0
        if worker.rank == 0 and call.streaming:
            connection.send(StreamItem(call.call_id, item))


def _discard_queued(worker: DistributedWorker) -> None:
    """Items queued outside a call would otherwise leak into the next stream."""
    while True:
        try:
            worker.queue.get_nowait()
        except queue.Empty:
            return
