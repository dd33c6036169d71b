"""``DistributedWorker``: the class a user subclasses; one instance lives in each worker process.

Override ``setup(**kwargs)`` (once per worker, with ``DistributedRunner.start``'s keywords),
``__call__(streaming=False, **payload)`` (every call) and ``teardown()``. ``rank``,
``world_size`` and ``device`` say where the worker runs; ``add_streaming_result`` sends an item
to the caller of ``DistributedRunner.stream``.

As in fal, the hooks run on the worker's own event loop, in a thread of its own: coroutine
functions on the loop, plain functions in the loop's executor. The process's main thread talks
to the runner meanwhile (``minifal.distributed.worker_process``). Each of those threads has the
rank's GPU as its current CUDA device (CUDA's current device is per thread), so that
``torch.cuda.current_device()`` and the collectives that use it (``all_gather_object``...) agree
with ``self.device`` in every hook.

fal's ``fal.distributed.worker`` holds this class and ``DistributedRunner``: that path is
``minifal/distributed/worker.py``, which names both.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from minifal.distributed.process_group import rank_device
from minifal.distributed.serialization import distributed_serialize, encode_text_event


class DistributedWorker:
    queue: queue.Queue[bytes]
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.rank = rank
        self.world_size = world_size
        self.queue = queue.Queue()
        self.streams_text_events: bool | None = None
        """How the call in progress streams: set by the worker process for each call."""
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        # The current CUDA device is per thread: every thread that runs a hook selects ours.
        self.loop.set_default_executor(
            ThreadPoolExecutor(
                thread_name_prefix=f"distributed-worker-{rank}", initializer=self._select_device
            )
        )
        self._start_thread()

    def _start_thread(self) -> None:
        self.thread = threading.Thread(
            target=self._run_forever, name=f"distributed-worker-{self.rank}-loop", daemon=True
        )
        self.thread.start()

    def _run_forever(self) -> None:
        self._select_device()
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _select_device(self) -> None:
        """Make this rank's GPU the current CUDA device of the calling thread."""
        device = self.device
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)

    # -- where the worker runs --

    @property
    def device(self) -> Any:
        """``cuda:<rank>`` (this rank's own GPU), or the CPU when there is no CUDA."""
        return rank_device(self.rank)

    @property
    def running(self) -> bool:
        """Whether the worker's event loop thread is alive."""
        return self.thread.is_alive()

    # -- called by the worker process --

    def initialize(self, **kwargs: Any) -> None:
        """Select this rank's GPU, then run ``setup(**kwargs)`` on the worker's loop."""
        self._select_device()
        self.rank_print(f"Initializing worker on device {self.device}")
        started = time.time()
        self.run_in_worker(self.setup, **kwargs).result()
        self.rank_print(f"Setup took {time.time() - started:.2f} seconds")

    def shutdown(self, timeout: int | float | None = None) -> None:
        """Run ``teardown()``, then stop the worker's loop (waiting ``timeout`` for its thread)."""
        if not self.running:
            return
        try:
            self.run_in_worker(self.teardown).result()
        except Exception as exc:
            self.rank_print(f"Error during teardown: {exc}\n{traceback.format_exc()}")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=timeout)

    # -- for the user's code --

    def add_streaming_result(
        self,
        result: Any,
        image_format: str = "jpeg",
        as_text_event: bool = False,
    ) -> None:
        """Queue an item for the caller of ``DistributedRunner.stream`` (rank 0's are sent).

        In a call the encoding follows the stream's ``as_text_events`` (fal requires the two to
        match; here a mismatch cannot garble the stream); ``as_text_event`` applies otherwise.
        """
        as_text = as_text_event if self.streams_text_events is None else self.streams_text_events
        if as_text:
            encoded = encode_text_event(result, is_final=False, image_format=image_format)
        else:
            encoded = distributed_serialize(result, is_final=False, image_format=image_format)
        self.queue.put_nowait(encoded)

    def add_streaming_error(self, error: Exception) -> None:
        """Queue ``{"error": str(error)}`` as a streamed item."""
        self.add_streaming_result({"error": str(error)})

    def rank_print(self, message: str, debug: bool = False) -> None:
        prefix = "[debug] " if debug else ""
        print(f"{prefix}[rank {self.rank}] {message}", flush=True)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run a coroutine on the worker's loop; a future of its result."""
        try:
            if not self.running:
                raise RuntimeError("Event loop is not running.")
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except Exception:
            coro.close()
            raise

    async def _run_sync_in_executor(self, func: Callable[..., Any], *args: Any, **kwargs: Any):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, partial(func, *args, **kwargs))

    def run_in_worker(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``func`` on the worker's loop (a plain function in its executor)."""
        if inspect.iscoroutinefunction(func):
            return self.submit(func(*args, **kwargs))
        return self.submit(self._run_sync_in_executor(func, *args, **kwargs))

    # -- to override --

    def setup(self, **kwargs: Any) -> None:
        """Load models and resources; called once per worker with ``start()``'s keywords."""
        return

    def teardown(self) -> None:
        """Release resources; called once per worker when the runner stops."""
        return

    def __call__(self, streaming: bool = False, **kwargs: Any) -> Any:
        """Handle one call: ``kwargs`` is the payload. Rank 0's return value is the result."""
        return {}
