"""``precompiled_modules(key)``: the block in which a runner loads, or makes, its artifacts.

The block wires four parts, each in its own module: the artifact store (``artifact_store.py``:
the key's artifacts in the shared store, what is saved, the publish), the warm loader
(``warm_loader.py``: a background thread that loads the store and the artifacts ahead of their
first calls), the compile pool (``compile_pool.py``: compiles while the block is open, inline or
in worker processes) and the dispatch (``module.py``: which artifact serves a call signature).

On entry the loader starts, overlapping whatever the app does next (loading weights,
typically). Inside the block, a call signature with no artifact is captured, compiled (here, or
by a worker process) and saved; on exit the workers' artifacts are collected, the store
publishes what was saved (merge, never overwrite) and releases the lease, and one ``precompiled``
startup event sums the block up. After the block nothing new is compiled: an uncovered call
runs the fallback.

Serving while compiling (the default; ``serve_while_compiling=False`` or
``MINIFAL_SERVE_WHILE_COMPILING=0`` restores the wait), a call signature with no artifact is not
compiled inside the block: it is answered eagerly, and so is one whose artifact another runner
is still compiling. The block then ends at once (the runner is ready) and its switchover
(``switchover.py``) installs each artifact as it is compiled here or published by the other
runner; the publish, the lease's release and the ``precompiled`` event come at its end.
The runner's shutdown stops it (``background_work.stop_all``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import torch

from minifal.compiled import background_work
from minifal.compiled.cache.torch_timings import compile_times
from minifal.compiled.precompiled.artifact_store import ArtifactStore
from minifal.compiled.precompiled.compile_pool import CompilePool
from minifal.compiled.precompiled.compile_workers import configured_workers
from minifal.compiled.precompiled.inductor_options import options_text
from minifal.compiled.precompiled.module import FALLBACKS, PrecompiledModule
from minifal.compiled.precompiled.switchover import Switchover
from minifal.compiled.precompiled.warm_loader import WarmLoader, preload_mode
from minifal.host import envs
from minifal.startup.events import record

logger = logging.getLogger("minifal.precompiled")


def serve_while_compiling_default() -> bool:
    """``$MINIFAL_SERVE_WHILE_COMPILING`` (on unless ``0``)."""
    return envs.SERVE_WHILE_COMPILING.get()


class PrecompiledModules:
    """The artifacts of one cache key, and the modules that dispatch to them."""

    def __init__(
        self, cache_key: str, fallback: str = "eager", serve_while_compiling: bool | None = None
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback={fallback!r}: expected one of {FALLBACKS}")
        self.cache_key = cache_key
        self.fallback = fallback
        if serve_while_compiling is None:
            serve_while_compiling = serve_while_compiling_default()
        self.serve_while_compiling = serve_while_compiling
        self._store = ArtifactStore(cache_key)
        workers = configured_workers()  # 0 workers: compile inline
        if serve_while_compiling and not envs.PRECOMPILED_WORKERS.is_set():
            workers = max(1, workers)  # a worker compiles without the serving process's GIL
        self._compiles = CompilePool(workers, defer=serve_while_compiling)
        self._loader = WarmLoader(
            self._store,
            preload_mode(),
            serve_while_compiling,
            on_covered=self._compiles.retire_standby,  # a warm runner: no worker's imports
        )
        self._modules: list[PrecompiledModule] = []
        self._opened_at = 0.0
        self._times_at_open = compile_times()
        self._first_wrap_at = 0.0  # the app has its modules: what follows is compile + warmup
        self._closed_at = 0.0
        self.switchover: Switchover | None = None  # serving while compiling, after the block
        self._background = 0  # its number in background_work

    def module(
        self,
        module: torch.nn.Module,
        *,
        fallback: str | None = None,
        cuda_graphs: bool = False,
        inductor_options: Mapping[str, Any] | None = None,
    ) -> PrecompiledModule:
        """Wrap ``module``: its calls dispatch to this key's artifacts by input signature, and
        with ``cuda_graphs`` each artifact's CUDA calls replay from a CUDA graph.

        ``inductor_options`` (Inductor settings, e.g. ``inductor_options.MAX_AUTOTUNE``) go to
        each of its compiles and name its artifacts: they are not those of the same module
        without them. ``ValueError`` for a value that is not JSON or a name Inductor lacks."""
        wrapped = PrecompiledModule(
            module,
            loader=self._loader,
            compiles=self._compiles,
            store=self._store,
            fallback=fallback or self.fallback,
            cuda_graphs=cuda_graphs,
            inductor_options=inductor_options,
        )
        if wrapped.inductor_options:
            logger.info(
                "precompiled %r: %s compiles with Inductor options %s",
                self.cache_key,
                type(module).__name__,
                options_text(wrapped.inductor_options),
            )
        self._modules.append(wrapped)
        self._first_wrap_at = self._first_wrap_at or time.time()
        return wrapped

    def open(self) -> None:
        """Start the block: compiles are taken (the compile workers start, importing while the
        app loads), the loader starts."""
        self._compiles.start()
        self._opened_at = time.time()
        self._times_at_open = compile_times()
        self._loader.start()

    def abort_compiles(self) -> None:
        """Stop the workers (the block failed): nothing of theirs is installed or published."""
        self._compiles.abort("the precompiled_modules block failed")

    def close(self) -> None:
        """End the block: no more compiles. Serving while compiling with signatures left to
        compile or to load, start the switchover, which finishes the block in the background;
        otherwise collect the workers' compiles, publish what was compiled, release the lease."""
        self._compiles.close()
        self._loader.stop_serving()
        self._closed_at = time.time()
        deferred = self._compiles.take_deferred()
        if deferred:
            logger.info(
                "precompiled %r: serving %d call signature(s) eagerly until compiled",
                self.cache_key,
                len(deferred),
            )
            self.switchover = Switchover(
                self.cache_key, deferred, self._loader, self._compiles, self._finish_switchover
            )
            self._background = background_work.register(self.stop_switchover)
            self.switchover.start()
            return
        if not self._loader.wait_store():
            self._compiles.abort("the store load is still running: not published")
            logger.warning(
                "precompiled %r: the store load is still running; not published", self.cache_key
            )
            return
        self._compiles.finish()
        self._publish()

    def stop_switchover(self, timeout: float = background_work.STOP_TIMEOUT_S) -> None:
        """Stop the switchover (the runner shuts down): what did not switch stays eager."""
        if self.switchover is not None and not self.switchover.stop(timeout):
            logger.warning(
                "precompiled %r: the switchover is still compiling; leaving it", self.cache_key
            )

    def _finish_switchover(self, store_loaded: bool) -> None:
        """The switchover's end: publish what it compiled, release the lease, sum up."""
        background_work.done(self._background)
        if store_loaded:
            self._publish()

    def _publish(self) -> None:
        self._loader.join()
        self._store.publish()
        resolutions: dict[str, str] = {}
        inductor_options: dict[str, dict[str, Any]] = {}
        for wrapped in self._modules:
            name = type(wrapped._orig_mod).__name__
            for label, how in wrapped.resolutions.items():
                resolutions[f"{name} {label}"] = how
            if wrapped.inductor_options:
                inductor_options[name] = wrapped.inductor_options
        closed_at = self._closed_at
        record(
            "precompiled",
            self._opened_at,
            time.time(),
            key=self.cache_key,
            # compile + warmup: from the first wrapped module to the end of the block
            warmup_s=round(closed_at - self._first_wrap_at, 3) if self._first_wrap_at else None,
            served_while_compiling=self.switchover is not None,
            switched=self.switchover.switched if self.switchover is not None else None,
            waited_for_load_s=round(self._loader.waited_s, 3),
            capture_s=round(self._store.capture_s, 3),
            resolutions=resolutions,
            inductor_options=inductor_options,
            **asdict(compile_times().since(self._times_at_open)),
            loaded=self._loader.loaded_count,
            compiled=self._store.compiled,
            not_saved=self._store.not_saved,
        )


@contextmanager
def precompiled_modules(
    cache_key: str, *, fallback: str = "eager", serve_while_compiling: bool | None = None
) -> Iterator[PrecompiledModules]:
    """Load ``cache_key``'s artifacts (in the background), compile what is missing, publish.

    ::

        with precompiled_modules("sd-turbo/v1") as precompiled:
            pipeline = load_pipeline()                    # overlaps the store load
            pipeline.unet = precompiled.module(pipeline.unet)
            pipeline("warmup", width=512, height=512)     # loads, or compiles, this signature

    ``fallback`` is what an uncovered call runs after the block: ``"eager"`` or ``"compile"``.
    ``serve_while_compiling`` (default ``$MINIFAL_SERVE_WHILE_COMPILING``, on): the block ends
    after an eager warmup, and what it must compile, or wait for, switches in later; False:
    the block ends with everything compiled (a benchmark of compiled-only timings wants that).
    The block's own exception propagates unchanged; nothing here raises into the app.
    """
    modules = PrecompiledModules(cache_key, fallback, serve_while_compiling)
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
