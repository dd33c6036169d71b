"""``WarmLoader``: the block's background thread, which loads artifacts ahead of their first calls.

From the block's start it fills the private dir from the store (``ArtifactStore.load``) while the
app goes on (loading weights, typically); ``MINIFAL_PRECOMPILED_PRELOAD`` says whether it also loads
the artifacts (in the order they were first called; a call waits for its own artifact only) and
makes each one's first call with placeholder inputs (``first_call.py``). From that first placeholder
call on the thread also runs what ``run_warmed()`` hands it, the first CUDA graph capture of each
such artifact, where torch's per-thread state (cuDNN's execution plans) is warm, until
``stop_serving()``. Every wait is bounded by the runner's startup deadline.

When another runner holds the compile lease the store load waits for its publish. With
``serve_while_waiting`` a call does not wait with it: it learns there is no artifact yet (and is
answered eagerly; the block's switchover installs the artifact once it is in). ``stop()`` ends that
wait early (the runner shuts down).

``on_covered`` hears, once, that this runner most likely has nothing to compile: the store held this
key's artifacts, or another runner holds the compile lease (the block stops its standby compile
workers then: ``standby_workers.py``)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minifal.compiled import torch_internals
from minifal.compiled.cache.settings import current_settings
from minifal.compiled.precompiled.artifact_files import ArtifactDir, ArtifactMeta, load_artifact
from minifal.compiled.precompiled.artifact_store import ArtifactStore
from minifal.compiled.precompiled.first_call import run_first_call
from minifal.host import envs
from minifal.startup.events import OpenSpan, begin, finish

logger = logging.getLogger("minifal.precompiled")

# What a background thread does while the app goes on (loading weights, typically):
# "first-calls" loads the store and the artifacts and calls each once with placeholder inputs
# (first_call.py), "artifacts" only loads them, "store" only fills the private dir, "none" starts
# no thread (everything at the first call). Threads share the GIL: see docs/compile-cache.md.


@dataclass(frozen=True)
class LoadedArtifact:
    meta: ArtifactMeta
    artifact: Any  # a CompiledArtifact (torch_internals.load_compiled_artifact)
    first_called: bool = False  # by the background thread, with placeholder inputs


@dataclass(frozen=True)
class _ReadArtifact:
    """An artifact as loaded from its file (``artifact`` is None when that failed)."""

    meta: ArtifactMeta
    path: Path
    artifact: Any
    started: float
    loaded: float
    span: OpenSpan
    """Its ``precompiled.load`` phase, begun with the read, ended after its first call."""
    error: str = ""


def _which(cache_key: str, meta: ArtifactMeta) -> dict[str, str]:
    """The details that say which artifact a ``precompiled.load`` phase loads."""
    return {
        "key": cache_key,
        "module": meta.module_class.rsplit(".", 1)[-1],
        "signature": meta.signature_label,
    }


def _read_artifact(cache_key: str, meta: ArtifactMeta, path: Path) -> _ReadArtifact:
    started = time.time()
    span = begin("precompiled.load", started, **_which(cache_key, meta))
    try:
        artifact, error = load_artifact(path), ""
    except Exception as exc:
        logger.warning("precompiled %r: cannot load %s (%s)", cache_key, path.name, exc)
        artifact, error = None, f"{type(exc).__name__}: {exc}"
    return _ReadArtifact(meta, path, artifact, started, time.time(), span, error)


class WarmLoader:
    """Loads ``store``'s artifacts (as ``preload`` says) and answers which one a call gets."""

    def __init__(
        self,
        store: ArtifactStore,
        preload: str,
        serve_while_waiting: bool = False,
        on_covered: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_covered = on_covered
        self.cache_key = store.cache_key
        self.preload = preload
        self._serve_while_waiting = serve_while_waiting
        self._waiting = threading.Event()  # another runner holds the lease: its publish is awaited
        self._stopped = threading.Event()
        self._loaded: dict[tuple[str, str], LoadedArtifact] = {}
        self.loaded_count = 0
        self.waited_s = 0.0  # calls waiting for the background load
        self._ready = threading.Event()
        self._progress = threading.Condition()  # notified at each artifact loaded, and at ready
        self._load_lock = threading.Lock()
        self._artifacts_loaded = False
        self._thread: threading.Thread | None = None
        self._reader: threading.Thread | None = None  # loads ahead of the first calls
        # From its first placeholder call on, a "first-calls" thread also runs what run_warmed()
        # hands it, until stop_serving().
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._serving = False
        self._serves = False  # from start() to stop_serving(): may it serve run_warmed()?
        self._serving_lock = threading.Lock()

    def start(self) -> None:
        """Start the background thread (none in ``"none"`` mode: all at the first call)."""
        self._serves = True
        if self.preload == "none":
            return
        self._thread = threading.Thread(
            target=self._background, name="minifal-precompiled-load", daemon=True
        )
        self._thread.start()

    def loaded_artifact(self, module_digest: str, signature_digest: str) -> LoadedArtifact | None:
        """The loaded artifact of this module and signature, waiting (bounded) for the loader
        to have it or to be done; None when there is none."""
        start = time.monotonic()
        if self._thread is None:
            ready = self.wait_ready()
        else:
            preloads = self.preload in ("first-calls", "artifacts")
            ready = self._wait_for_artifact((module_digest, signature_digest), preloads)
            if ready and not preloads and self._ready.is_set():
                ready = self.wait_ready()
        self.waited_s += time.monotonic() - start
        if not ready:
            logger.warning("precompiled %r: store not loaded by the deadline", self.cache_key)
            return None
        return self._loaded.get((module_digest, signature_digest))

    def wait_ready(self) -> bool:
        """Wait for the store and the artifacts, at most until the startup deadline; True when
        done. What no background thread preloads is loaded here, in the caller's thread."""
        if not self.wait_store():
            return False
        with self._load_lock:
            artifact_dir = self._store.artifact_dir
            if not self._artifacts_loaded and artifact_dir is not None:
                self._load_artifacts(artifact_dir)
        return True

    def wait_store(self, timeout: float | None = None) -> bool:
        """Wait for the store load (made here in ``"none"`` mode), at most ``timeout`` seconds
        and never past the deadline."""
        with self._load_lock:
            if self.preload == "none" and not self._ready.is_set():
                self._load()
        left = max(0.0, current_settings().deadline - time.time())
        return self._ready.wait(left if timeout is None else min(left, timeout))

    @property
    def waiting_for_compile(self) -> bool:
        """Calls are answered without waiting: the store waits for another runner's publish."""
        return self._serve_while_waiting and self._waiting.is_set() and not self._ready.is_set()

    def stop(self) -> None:
        """Stop waiting for another runner's publish (this runner shuts down)."""
        self._stopped.set()

    def _keep_waiting(self) -> bool:
        """The store load's question at each poll of another runner's lease."""
        if not self._waiting.is_set():
            with self._progress:
                self._waiting.set()
                self._progress.notify_all()
            self._covered()
        return not self._stopped.is_set()

    def _covered(self) -> None:
        """Tell ``on_covered`` (once) that this runner most likely compiles nothing."""
        on_covered, self._on_covered = self._on_covered, None
        if on_covered is not None:
            on_covered()

    def _wait_for_artifact(self, key: tuple[str, str], preloads: bool) -> bool:
        """Wait until the background thread has loaded this artifact (``preloads``), or loaded
        everything, or (serving while waiting) waits for another runner's compile.

        It loads them in the order they were first called when compiled, so a runner's first
        warmup call starts as soon as its own artifact is in, while the thread goes on."""
        timeout = max(0.0, current_settings().deadline - time.time())
        with self._progress:
            return self._progress.wait_for(
                lambda: (
                    (preloads and key in self._loaded)
                    or self._ready.is_set()
                    or self.waiting_for_compile
                ),
                timeout,
            )

    def run_warmed(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the background thread, whose placeholder calls warmed what torch keeps
        per thread (cuDNN's execution plans: rebuilding them cost the app's thread 0.8-1 s per
        SD-Turbo UNet capture on an H200), with the caller's grad mode and CUDA stream; inline
        when that thread does not serve (any more). Waits for it, bounded by the deadline."""
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        stream = torch.cuda.current_stream() if torch.cuda.is_initialized() else None
        done = Future[None]()

        def task() -> None:
            try:
                with (
                    torch.inference_mode(inference),
                    torch.set_grad_enabled(grad),
                    torch.cuda.stream(stream),  # None: a no-op
                ):
                    fn()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        with self._serving_lock:
            serving = self._serving
            if serving:
                self._tasks.put(task)
        if not serving:
            fn()
            return
        done.result(timeout=max(0.0, current_settings().deadline - time.time()))

    def stop_serving(self) -> None:
        """The block ends: the thread runs no more ``run_warmed`` tasks once those queued ran."""
        with self._serving_lock:
            self._serves = False
            if self._serving:
                self._serving = False
                self._tasks.put(None)

    def join(self) -> None:
        """Wait briefly for the threads: past the ready event they only return."""
        for thread in (self._thread, self._reader):
            if thread is not None:
                thread.join(timeout=1.0)

    def _background(self) -> None:
        self._load()
        while self._serving or not self._tasks.empty():
            task = self._tasks.get()
            if task is None:
                return
            task()

    def _start_serving(self) -> None:
        """From the first placeholder call on, this thread runs run_warmed()'s tasks: between
        two artifact loads, then until stop_serving()."""
        with self._serving_lock:
            self._serving = self._serves

    def _run_pending_tasks(self) -> None:
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return
            if task is None:  # stop_serving() came first: leave the stop for _background
                self._tasks.put(None)
                return
            task()

    def _load(self) -> None:
        try:
            artifact_dir = self._store.load(self._keep_waiting)
            if artifact_dir is not None and self._on_covered is not None and artifact_dir.listed():
                self._covered()
            if artifact_dir is not None and self.preload in ("first-calls", "artifacts"):
                self._load_artifacts(artifact_dir)
        except Exception as exc:  # never stop the app: a failed load is a compile
            logger.warning("precompiled %r: load failed (%s); compiling", self.cache_key, exc)
        finally:
            with self._progress:
                self._ready.set()
                self._progress.notify_all()

    def _load_artifacts(self, artifact_dir: ArtifactDir) -> None:
        """Load every artifact and, in "first-calls" mode, make its first call.

        The first calls run here, in the thread that also runs ``run_warmed()``'s captures; the
        loads, then, run ahead of them in a reader thread. A first call is mostly GPU-library
        work that releases the GIL (cuDNN building its execution plans: 0.8 s of the SD-Turbo
        UNet's 0.9 s first call on an H200), and a load is Python work that needs it: each
        overlaps the other. torch's compiler is imported first, by ``torch._dynamo`` as the
        app's libraries enter it: the other order deadlocked (``import_compiler``).
        """
        self._artifacts_loaded = True
        listed = artifact_dir.listed()
        if listed:
            torch_internals.import_compiler()
        if self.preload == "first-calls" and len(listed) > 1:
            reads: Iterator[_ReadArtifact | None] = self._reads_in_thread(listed)
        else:
            reads = (_read_artifact(self.cache_key, meta, path) for meta, path in listed)
        for read in reads:
            if read is None:  # the reader is late past the deadline: calls compile or fall back
                logger.warning("precompiled %r: artifacts not loaded in time", self.cache_key)
                return
            if read.artifact is None:
                which = _which(self.cache_key, read.meta)
                finish(read.span, read.loaded, **which, error=read.error)
                continue
            meta = read.meta
            first_call = self.preload == "first-calls" and bool(meta.input_layouts)
            first_call_start = time.time()
            first_called = first_call and self._first_call(read.artifact, meta)
            if first_called:
                self._start_serving()
            end = time.time()
            with self._progress:
                key = (meta.module_digest, meta.signature_digest)
                self._loaded[key] = LoadedArtifact(meta, read.artifact, first_called)
                self._progress.notify_all()
            self.loaded_count += 1
            finish(
                read.span,
                end,
                **_which(self.cache_key, meta),
                bytes=_size(read.path),
                form="unpacked" if read.path.is_dir() else "binary",
                load_s=round(read.loaded - read.started, 3),
                first_call_s=round(end - first_call_start, 3) if first_call else None,
            )
            self._run_pending_tasks()  # a capture waiting for this thread goes before the next load

    def _reads_in_thread(
        self, listed: list[tuple[ArtifactMeta, Path]]
    ) -> Iterator[_ReadArtifact | None]:
        """The artifacts, loaded by a reader thread in order; None if one is not in by the
        deadline. The reader stops after the last one."""
        done: queue.SimpleQueue[_ReadArtifact] = queue.SimpleQueue()

        def read_all() -> None:
            for meta, path in listed:
                done.put(_read_artifact(self.cache_key, meta, path))

        reader = threading.Thread(target=read_all, name="minifal-precompiled-read", daemon=True)
        self._reader = reader
        reader.start()
        for _ in listed:
            try:
                yield done.get(timeout=max(0.0, current_settings().deadline - time.time()))
            except queue.Empty:
                yield None
                return

    def _first_call(self, artifact: Any, meta: ArtifactMeta) -> bool:
        """The artifact's one-time work, before the app calls it (first_call.py); True if done."""
        try:
            run_first_call(artifact, meta.input_layouts, meta.input_plan, meta.grad_enabled)
        except Exception as exc:  # the app's own first call does the work instead
            logger.warning(
                "precompiled %r: placeholder call of %s failed (%s)",
                self.cache_key,
                meta.signature_label,
                exc,
            )
            return False
        return True


def preload_mode() -> str:
    """``$MINIFAL_PRECOMPILED_PRELOAD``; by default ``first-calls`` where a GPU is (a first call
    there is mostly kernel loading), else ``artifacts`` (on a CPU it is the whole computation,
    and it would take the cores the weight loading uses)."""
    default = "first-calls" if torch.cuda.is_available() else "artifacts"
    try:
        return envs.PRECOMPILED_PRELOAD.get() or default
    except ValueError as exc:
        logger.warning("%s; using %s", exc, default)
        return default


def _size(path: Path) -> int:
    """A binary artifact's size, or an unpacked one's (its files')."""
    try:
        if path.is_dir():
            return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
        return path.stat().st_size
    except OSError:
        return 0
