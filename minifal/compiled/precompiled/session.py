"""``precompiled_modules(key)``: the block in which a runner loads, or makes, its artifacts.

On entry a background thread does what ``load_inductor_cache(key)`` does (fill the private dir
from the shared store, or take the compile lease, or wait for its holder's publish), overlapping
whatever the app does next (loading weights, typically); ``MINIFAL_PRECOMPILED_PRELOAD`` says
whether it also loads the artifacts (in the order they were first called; a call waits for its
own artifact only) and makes each one's first call with placeholder inputs (``first_call.py``).
That thread then stays until the block ends, and the first CUDA graph capture of each such
artifact runs in it, where torch's per-thread state (cuDNN's execution plans) is warm. Every
wait is bounded by the runner's startup deadline. Inside the block, a
call signature with no artifact is captured, compiled (here, or by a worker process:
``compile_workers.py``) and saved; on exit the workers' artifacts are collected, and
``sync_inductor_cache(key)`` publishes what was saved (merge, never overwrite) and releases the
lease. After the block nothing is compiled any more: an uncovered call runs the fallback.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from minifal.compiled.cache import sync_inductor_cache
from minifal.compiled.cache.api import load_cache_scope
from minifal.compiled.cache.local_dir import private_cache_root
from minifal.compiled.cache.settings import current_settings
from minifal.compiled.cache.torch_source_key import prime_torch_key
from minifal.compiled.cache.torch_timings import compile_times
from minifal.compiled.call_signature import CallSignature, FlatCall
from minifal.compiled.precompiled.artifact_files import (
    ArtifactDir,
    ArtifactMeta,
    belongs_to_artifacts,
    load_artifact,
)
from minifal.compiled.precompiled.compile_workers import WorkerCompile, configured_workers
from minifal.compiled.precompiled.first_call import run_first_call
from minifal.compiled.precompiled.graph_compile import (
    CapturedCall,
    CompiledCall,
    NotPrecompilable,
    checked_call,
)
from minifal.compiled.precompiled.module import FALLBACKS, PrecompiledModule
from minifal.host import envs
from minifal.startup.events import record

logger = logging.getLogger("minifal.precompiled")

# What a background thread does while the app goes on (loading weights, typically):
# "first-calls" loads the store and the artifacts and calls each once with placeholder inputs
# (first_call.py), "artifacts" only loads them, "store" only fills the private dir, "none" starts
# no thread (everything at the first call): ``envs.PRECOMPILED_PRELOAD``. Threads share the GIL:
# see docs/compile-cache.md.


@dataclass(frozen=True)
class PendingCompile:
    """A captured call that a worker compiles; the block's end installs and publishes it."""

    module: PrecompiledModule
    call: FlatCall
    signature: CallSignature
    captured: CapturedCall
    started: float
    worker: WorkerCompile


@dataclass(frozen=True)
class _ReadArtifact:
    """An artifact as loaded from its file (``artifact`` is None when that failed)."""

    meta: ArtifactMeta
    path: Path
    artifact: Any
    started: float
    loaded: float


def _read_artifact(cache_key: str, meta: ArtifactMeta, path: Path) -> _ReadArtifact:
    started = time.time()
    try:
        artifact = load_artifact(path)
    except Exception as exc:
        logger.warning("precompiled %r: cannot load %s (%s)", cache_key, path.name, exc)
        artifact = None
    return _ReadArtifact(meta, path, artifact, started, time.time())


@dataclass(frozen=True)
class LoadedArtifact:
    meta: ArtifactMeta
    artifact: Any  # torch._inductor.CompiledArtifact
    first_called: bool = False  # by the background thread, with placeholder inputs


class PrecompiledModules:
    """The artifacts of one cache key, and the modules that dispatch to them."""

    def __init__(self, cache_key: str, fallback: str = "eager") -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback={fallback!r}: expected one of {FALLBACKS}")
        self.cache_key = cache_key
        self.fallback = fallback
        self._loaded: dict[tuple[str, str], LoadedArtifact] = {}
        self._artifact_dir: ArtifactDir | None = None
        self._dir_hash = ""
        self.preload = _preload_mode()
        self._ready = threading.Event()
        self._progress = threading.Condition()  # notified at each artifact loaded, and at ready
        self._load_lock = threading.Lock()
        self._artifacts_loaded = False
        self._thread: threading.Thread | None = None
        self._reader: threading.Thread | None = None  # loads ahead of the first calls
        # From its first placeholder call on, a "first-calls" thread also runs what run_warmed()
        # hands it, until close().
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._serving = False
        self._serving_lock = threading.Lock()
        self._open = False
        self._modules: list[PrecompiledModule] = []
        self._opened_at = 0.0
        self._times_at_open = compile_times()
        self._counts = {"loaded": 0, "compiled": 0, "not_saved": 0}
        self._dynamo_s = 0.0
        self._first_wrap_at = 0.0  # the app has its modules: what follows is compile + warmup
        self._waited_s = 0.0  # calls waiting for the background load
        self.compile_workers = configured_workers()  # 0: compile inline
        self._pending: list[PendingCompile] = []

    @property
    def compiling_allowed(self) -> bool:
        return self._open

    def module(
        self,
        module: torch.nn.Module,
        *,
        fallback: str | None = None,
        cuda_graphs: bool = False,
    ) -> PrecompiledModule:
        """Wrap ``module``: its calls dispatch to this key's artifacts by input signature, and
        with ``cuda_graphs`` each artifact's CUDA calls replay from a CUDA graph."""
        wrapped = PrecompiledModule(module, self, fallback or self.fallback, cuda_graphs)
        self._modules.append(wrapped)
        self._first_wrap_at = self._first_wrap_at or time.time()
        return wrapped

    def open(self) -> None:
        self._open = True
        self._opened_at = time.time()
        self._times_at_open = compile_times()
        if self.preload == "none":
            return  # everything happens at the first call, in the caller's thread
        self._thread = threading.Thread(
            target=self._background, name="minifal-precompiled-load", daemon=True
        )
        self._thread.start()

    def compile_later(
        self,
        module: PrecompiledModule,
        call: FlatCall,
        signature: CallSignature,
        captured: CapturedCall,
        started: float,
    ) -> None:
        """Hand ``captured`` to a worker (waiting for a free one); :class:`NotPrecompilable` if
        it cannot be handed over."""
        deadline = current_settings().deadline
        while sum(p.worker.running for p in self._pending) >= self.compile_workers:
            next(p for p in self._pending if p.worker.running).worker.wait(deadline)
        threads = (os.cpu_count() or 1) // self.compile_workers
        job_dir = private_cache_root(current_settings().local_root) / "precompiled-jobs"
        worker = WorkerCompile(captured, job_dir, threads)
        self._pending.append(PendingCompile(module, call, signature, captured, started, worker))
        logger.info(
            "precompiled %s %s: captured (Dynamo %.1f s); compiling in a worker",
            type(module._orig_mod).__name__,
            signature.label,
            captured.capture_s,
        )

    def abort_compiles(self) -> None:
        """Stop the workers (the block failed): nothing of theirs is installed or published."""
        for pending in self._pending:
            pending.worker.kill()
        self._pending.clear()

    def _finish_compiles(self) -> None:
        """Collect every worker's artifact: check it against eager, serve and publish it, and
        run it once (its first call, and its CUDA graph capture, happen here, not in a request)."""
        deadline = current_settings().deadline
        pending_list, self._pending = self._pending, []
        for position, pending in enumerate(pending_list):
            label = pending.signature.label
            inference = any(t.is_inference() for t in pending.call.tensors)
            try:
                artifact, seconds = pending.worker.result(deadline)
                with torch.inference_mode(inference), torch.no_grad():
                    compiled = checked_call(
                        pending.captured, artifact, seconds, pending.worker.artifact_path
                    )
                    runner = pending.module.install(
                        pending.call, pending.signature, compiled, pending.started
                    )
                    runner(pending.call)
            except NotPrecompilable as exc:
                logger.warning(
                    "precompiled %s: %s was not compiled (%s): runs %s",
                    type(pending.module._orig_mod).__name__,
                    label,
                    exc,
                    pending.module.fallback,
                )
                pending.module.use_fallback(pending.signature)
                if time.time() >= deadline:  # no time left for the others either
                    for later in pending_list[position + 1 :]:
                        later.worker.kill()
                        later.module.use_fallback(later.signature)
                    return
            finally:
                pending.worker.discard()  # whatever the store did not adopt

    def close(self) -> None:
        """End the block: no more compiles; collect the workers' compiles; publish what was
        compiled; release the lease."""
        self._open = False
        self._stop_serving()
        if not self._wait_store():
            self.abort_compiles()
            logger.warning(
                "precompiled %r: the store load is still running; not published", self.cache_key
            )
            return
        self._finish_compiles()
        for thread in (self._thread, self._reader):
            if thread is not None:
                thread.join(timeout=1.0)  # past the ready event they only return
        # Nothing saved, nothing to publish: no scan of the private dir (0.5 s on a warm GPU
        # runner, whose dir holds every loaded artifact's unpacked cache entries).
        sync_inductor_cache(self.cache_key, self._dir_hash, scan=self._counts["compiled"] > 0)
        resolutions: dict[str, str] = {}
        for wrapped in self._modules:
            for label, how in wrapped.resolutions.items():
                resolutions[f"{type(wrapped._orig_mod).__name__} {label}"] = how
        closed_at = time.time()
        record(
            "precompiled",
            self._opened_at,
            closed_at,
            key=self.cache_key,
            # compile + warmup: from the first wrapped module to the end of the block
            warmup_s=round(closed_at - self._first_wrap_at, 3) if self._first_wrap_at else None,
            waited_for_load_s=round(self._waited_s, 3),
            capture_s=round(self._dynamo_s, 3),
            resolutions=resolutions,
            **asdict(compile_times().since(self._times_at_open)),
            **self._counts,
        )

    def wait_ready(self) -> bool:
        """Wait for the store and the artifacts, at most until the startup deadline; True when
        done. What no background thread preloads is loaded here, in the caller's thread."""
        if not self._wait_store():
            return False
        with self._load_lock:
            if not self._artifacts_loaded and self._artifact_dir is not None:
                self._load_artifacts(self._artifact_dir)
        return True

    def _wait_store(self) -> bool:
        with self._load_lock:
            if self.preload == "none" and not self._ready.is_set():
                self._load()
        return self._ready.wait(max(0.0, current_settings().deadline - time.time()))

    def loaded_artifact(self, module_digest: str, signature_digest: str) -> LoadedArtifact | None:
        start = time.monotonic()
        if self.preload in ("first-calls", "artifacts") and self._thread is not None:
            ready = self._wait_for_artifact((module_digest, signature_digest))
        else:
            ready = self.wait_ready()
        self._waited_s += time.monotonic() - start
        if not ready:
            logger.warning("precompiled %r: store not loaded by the deadline", self.cache_key)
            return None
        return self._loaded.get((module_digest, signature_digest))

    def _wait_for_artifact(self, key: tuple[str, str]) -> bool:
        """Wait until the background thread has loaded this artifact, or loaded everything.

        It loads them in the order they were first called when compiled, so a runner's first
        warmup call starts as soon as its own artifact is in, while the thread goes on."""
        timeout = max(0.0, current_settings().deadline - time.time())
        with self._progress:
            return self._progress.wait_for(
                lambda: key in self._loaded or self._ready.is_set(), timeout
            )

    def publish_later(
        self,
        module: PrecompiledModule,
        signature: CallSignature,
        compiled: CompiledCall,
        started: float,
    ) -> None:
        """Save a fresh artifact where ``close()``'s sync will publish it."""
        self._dynamo_s += compiled.capture_s
        cls = type(module._orig_mod)
        meta = ArtifactMeta(
            module_class=f"{cls.__module__}.{cls.__qualname__}",
            module_digest=module.module_digest,
            signature_digest=signature.digest,
            signature_label=signature.label,
            input_plan=compiled.input_plan,
            out_spec=compiled.out_spec,
            capture_s=round(compiled.capture_s, 3),
            compile_s=round(compiled.compile_s, 3),
            first_called_at=started,
            input_layouts=[list(layout) for layout in compiled.input_layouts],
            grad_enabled=compiled.grad_enabled,
        )
        saved = False
        if self._artifact_dir is not None:
            try:
                self._artifact_dir.save(meta, compiled.artifact, compiled.saved_at)
                saved = True
            except Exception as exc:  # a full disk or an unsaveable graph costs a recompile later
                logger.warning(
                    "precompiled %r: could not save %s (%s)", self.cache_key, signature.label, exc
                )
        self._counts["compiled" if saved else "not_saved"] += 1
        record(
            "precompiled.compile",
            started,
            time.time(),
            key=self.cache_key,
            module=cls.__name__,
            signature=signature.label,
            dynamo_s=round(compiled.capture_s, 3),
            inductor_s=round(compiled.compile_s, 3),
            max_abs_diff=compiled.max_abs_diff,
            in_worker=compiled.saved_at is not None,
            saved=saved,
        )
        logger.info(
            "precompiled %s %s: compiled (Dynamo %.1f s, Inductor %.1f s)",
            cls.__name__,
            signature.label,
            compiled.capture_s,
            compiled.compile_s,
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

    def _background(self) -> None:
        self._load()
        while self._serving or not self._tasks.empty():
            task = self._tasks.get()
            if task is None:
                return
            task()

    def _start_serving(self) -> None:
        """From the first placeholder call on, this thread runs run_warmed()'s tasks: between
        two artifact loads, then until close()."""
        with self._serving_lock:
            self._serving = self._open

    def _run_pending_tasks(self) -> None:
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return
            if task is None:  # close() came first: leave the stop for _background
                self._tasks.put(None)
                return
            task()

    def _stop_serving(self) -> None:
        with self._serving_lock:
            if self._serving:
                self._serving = False
                self._tasks.put(None)

    def _load(self) -> None:
        try:
            prime_torch_key()
            self._dir_hash = load_cache_scope(self.cache_key, belongs_to_artifacts)
            if self._dir_hash:
                self._artifact_dir = ArtifactDir(private_cache_root(current_settings().local_root))
                if self.preload in ("first-calls", "artifacts"):
                    self._load_artifacts(self._artifact_dir)
        except Exception as exc:  # never stop the app: a failed load is a compile
            logger.warning("precompiled %r: load failed (%s); compiling", self.cache_key, exc)
        finally:
            with self._progress:
                self._ready.set()
                self._progress.notify_all()

    def _load_artifacts(self, artifact_dir: ArtifactDir) -> None:
        """Load every artifact and, in "first-calls" mode, make its first call.

        The first calls run here, in the thread that also runs ``run_warmed()``'s captures;
        the loads, then, run ahead of them in a reader thread. A first call is mostly
        GPU-library work that releases the GIL (cuDNN building its execution plans: 0.8 s of
        the SD-Turbo UNet's 0.9 s first call on an H200), and a load is Python work that
        needs it: each overlaps the other.
        """
        self._artifacts_loaded = True
        listed = artifact_dir.listed()
        if self.preload == "first-calls" and len(listed) > 1:
            reads: Iterator[_ReadArtifact | None] = self._reads_in_thread(listed)
        else:
            reads = (_read_artifact(self.cache_key, meta, path) for meta, path in listed)
        for read in reads:
            if read is None:  # the reader is late past the deadline: calls compile or fall back
                logger.warning("precompiled %r: artifacts not loaded in time", self.cache_key)
                return
            if read.artifact is None:
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
            self._counts["loaded"] += 1
            record(
                "precompiled.load",
                read.started,
                end,
                key=self.cache_key,
                module=meta.module_class.rsplit(".", 1)[-1],
                signature=meta.signature_label,
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


@contextmanager
def precompiled_modules(cache_key: str, *, fallback: str = "eager") -> Iterator[PrecompiledModules]:
    """Load ``cache_key``'s artifacts (in the background), compile what is missing, publish.

    ::

        with precompiled_modules("sd-turbo/v1") as precompiled:
            pipeline = load_pipeline()                    # overlaps the store load
            pipeline.unet = precompiled.module(pipeline.unet)
            pipeline("warmup", width=512, height=512)     # loads, or compiles, this signature

    ``fallback`` is what an uncovered call runs after the block: ``"eager"`` or ``"compile"``.
    The block's own exception propagates unchanged; nothing here raises into the app.
    """
    modules = PrecompiledModules(cache_key, fallback)
    modules.open()
    try:
        yield modules
    except BaseException:
        modules.abort_compiles()
        raise
    finally:
        try:
            modules.close()
        except Exception as exc:  # publishing is best effort: never mask the block's exception
            logger.warning("precompiled %r: closing failed (%s)", cache_key, exc)


def _preload_mode() -> str:
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
