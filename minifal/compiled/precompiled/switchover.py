"""``Switchover``: after a runner is ready, get each eagerly served call signature to compiled code.

Serving while compiling, a ``precompiled_modules`` block ends as soon as the app's warmup ran
eagerly, and the runner serves. The signatures the warmup met with no artifact were noted by the
compile pool (``DeferredCall``); this thread takes them one by one:

- it waits for the store (a runner waiting for another's compile waits here, not in ``setup()``);
- a signature whose artifact is now loaded (another runner published it) is checked against
  eager on its first call and installed;
- the others are captured here (Dynamo) and compiled by a worker process (``compile_workers.py``)
  or, with no workers, here; each is checked against eager and installed as it comes.

An install is atomic for the calls (``PrecompiledModule.install``); one that fails or does not
match eager leaves the signature eager and says why. Each compile is a ``precompiled.compile``
phase (``compile_phase.py``), ended on every way out; each signature's outcome is a
``precompiled.switch`` startup event (when it was first called, when it switched, from what). At
the end the block publishes and releases the lease (``on_done``). ``stop()`` (the runner shuts
down) ends the waits and kills the workers; a compile running in this thread cannot be cut
short, so the join is bounded and the thread is a daemon.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch

from minifal.compiled.background_work import GPU_GATE
from minifal.compiled.cache.settings import current_settings
from minifal.compiled.precompiled.compile_phase import CompilePhase
from minifal.compiled.precompiled.compile_pool import CompilePool, DeferredCall, PendingCompile
from minifal.compiled.precompiled.graph_compile import (
    CompiledCall,
    NotPrecompilable,
    compile_captured,
)
from minifal.compiled.precompiled.warm_loader import WarmLoader
from minifal.startup.events import record

logger = logging.getLogger("minifal.precompiled")

STORE_POLL_S = 1.0  # how often a wait for the store looks at stop()
STOPPED = "stopped: the runner shuts down"


class Switchover:
    """The thread that moves ``deferred`` signatures from eager to compiled code."""

    def __init__(
        self,
        cache_key: str,
        deferred: list[DeferredCall],
        loader: WarmLoader,
        compiles: CompilePool,
        on_done: Callable[[bool], None],
    ) -> None:
        self.cache_key = cache_key
        self._deferred = deferred
        self._by_signature = {(id(d.target), d.signature.digest): d for d in deferred}
        self._loader = loader
        self._compiles = compiles
        self._on_done = on_done  # called last, with whether the store was loaded
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="minifal-precompiled-switchover", daemon=True
        )
        self.switched = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """End the waits, kill the workers; True if the thread ended within ``timeout``."""
        self._stop.set()
        self._loader.stop()
        self._compiles.abort(STOPPED)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait for the switchover to be over (tests, benchmarks); True if it is."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        loaded = False
        try:
            loaded = self._wait_for_store()
            if loaded:
                self._switch_all()
            else:
                why = STOPPED if self._stop.is_set() else "the store did not load by the deadline"
                if not self._stop.is_set():
                    logger.warning("precompiled %r: %s; serving eagerly", self.cache_key, why)
                for deferred in self._deferred:
                    self._record(deferred, None, why)
            self._compiles.finish(self._worker_done)  # its standby workers stop there too
        except Exception:  # never into the app: what did not switch stays eager
            logger.exception("precompiled %r: the switchover failed", self.cache_key)
            self._compiles.abort("the switchover failed")
        finally:
            self._on_done(loaded)

    def _switch_all(self) -> None:
        for deferred in self._deferred:
            if self._stop.is_set():
                return
            with (
                torch.inference_mode(deferred.inference),
                torch.set_grad_enabled(deferred.grad_enabled),
            ):
                self._switch(deferred)

    def _wait_for_store(self) -> bool:
        """Wait for the store (another runner's publish, maybe), bounded, stopped by stop()."""
        while not self._stop.is_set():
            if self._loader.wait_store(STORE_POLL_S):
                return self._loader.wait_ready()
            if time.time() >= current_settings().deadline:
                return False
        return False

    def _switch(self, deferred: DeferredCall) -> None:
        target, signature = deferred.target, deferred.signature
        loaded = self._loader.loaded_artifact(target.module_digest, signature.digest)
        if loaded is not None:
            try:
                with GPU_GATE.step():
                    difference = target.install_loaded(deferred.call, signature, loaded)
            except NotPrecompilable as exc:
                logger.warning(
                    "precompiled %s: the loaded artifact of %s is not used (%s): stays eager",
                    deferred.name,
                    signature.label,
                    exc,
                )
                self._record(deferred, None, str(exc), source="loaded")
            else:
                self._record(deferred, difference, "", source="loaded")
            return
        in_worker = self._compiles.workers > 0
        phase = CompilePhase(self.cache_key, deferred.name, signature.label, in_worker)
        try:
            with GPU_GATE.step():
                captured = target.capture(deferred.call)
            if in_worker:
                try:
                    self._compiles.submit(
                        target, deferred.name, deferred.call, signature, captured, phase
                    )
                    return  # finish() installs it
                except NotPrecompilable as exc:
                    if self._stop.is_set():  # stop() closed the pool: no compile here either
                        raise NotPrecompilable(STOPPED) from exc
                    logger.info("precompiled %s: compiling here (%s)", deferred.name, exc)
                    phase = phase.moved_inline(exc)
            with GPU_GATE.step():  # it runs and checks the compiled code on the GPU
                compiled = compile_captured(captured)
                target.install(deferred.call, signature, compiled, phase)
        except NotPrecompilable as exc:
            phase.failed(exc)
            logger.log(
                logging.INFO if str(exc) == STOPPED else logging.WARNING,  # a shutdown is normal
                "precompiled %s: %s was not compiled (%s): stays eager",
                deferred.name,
                signature.label,
                exc,
            )
            target.use_fallback(signature)
            self._record(deferred, None, str(exc))
            return
        except BaseException as exc:
            phase.failed(exc)
            raise
        self._record(deferred, compiled.max_abs_diff, "")

    def _worker_done(
        self, pending: PendingCompile, compiled: CompiledCall | None, why: str
    ) -> None:
        deferred = self._by_signature.get((id(pending.target), pending.signature.digest))
        if deferred is not None:
            difference = None if compiled is None else compiled.max_abs_diff
            self._record(deferred, difference, STOPPED if self._stop.is_set() else why)

    def _record(
        self,
        deferred: DeferredCall,
        max_abs_diff: float | None,
        why: str,
        source: str = "compiled",
    ) -> None:
        switched = max_abs_diff is not None
        self.switched += switched
        if switched:
            logger.info(
                "precompiled %s %s: switched to %s code (max difference from eager %.3g)",
                deferred.name,
                deferred.signature.label,
                source,
                max_abs_diff,
            )
        record(
            "precompiled.switch",
            deferred.deferred_at,
            time.time(),
            key=self.cache_key,
            module=deferred.name,
            signature=deferred.signature.label,
            source=source,
            switched=switched,
            max_abs_diff=max_abs_diff,
            reason=why or None,
        )
