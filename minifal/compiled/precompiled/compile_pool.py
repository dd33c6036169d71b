"""``CompilePool``: the block's compiles, inline or in worker processes (``compile_workers.py``).

Compiles are taken while the block is open, and only then: after it an uncovered call runs
the fallback. With workers (``MINIFAL_PRECOMPILED_WORKERS``, read by the block), a captured call
is handed to a worker (waiting for a free one) while the dispatch answers the call eagerly;
``finish()`` collects each worker's artifact, checks it against eager on the call it was
captured from and hands it to its module, which serves and publishes it. The worker processes
start when the block opens (``standby_workers.py``: their imports overlap the app's loading).

A deferring pool (serving while compiling) takes no compile during the block: each new call
signature is only noted (``defer``), answered eagerly, and the block's switchover captures and
compiles it after the runner is ready.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from minifal.compiled.background_work import GPU_GATE
from minifal.compiled.cache.local_dir import private_cache_root
from minifal.compiled.cache.settings import current_settings
from minifal.compiled.call_signature import CallSignature, FlatCall
from minifal.compiled.precompiled.compile_phase import CompilePhase
from minifal.compiled.precompiled.compile_workers import WorkerCompile
from minifal.compiled.precompiled.graph_compile import (
    CapturedCall,
    CompiledCall,
    NotPrecompilable,
    checked_call,
)
from minifal.compiled.precompiled.standby_workers import StandbyWorkers
from minifal.compiled.precompiled.warm_loader import LoadedArtifact

logger = logging.getLogger("minifal.precompiled")

NO_TIME_LEFT = "no time left before the deadline"


class CompileTarget(Protocol):
    """What a worker's compile is handed back to (a ``PrecompiledModule``)."""

    @property
    def fallback(self) -> str: ...

    @property
    def module_digest(self) -> str: ...

    def capture(self, call: FlatCall) -> CapturedCall: ...

    def install_loaded(
        self, call: FlatCall, signature: CallSignature, loaded: LoadedArtifact
    ) -> float: ...

    def install(
        self,
        call: FlatCall,
        signature: CallSignature,
        compiled: CompiledCall,
        phase: CompilePhase,
    ) -> None: ...

    def use_fallback(self, signature: CallSignature) -> None: ...


@dataclass(frozen=True)
class DeferredCall:
    """A call signature answered eagerly during the block; the switchover compiles it later."""

    target: CompileTarget
    name: str  # the module's class name, for logs
    call: FlatCall  # the first call of this signature: captured, and checked against, later
    signature: CallSignature
    deferred_at: float  # time.time() of that first call
    grad_enabled: bool
    inference: bool


@dataclass(frozen=True)
class PendingCompile:
    """A captured call that a worker compiles; the block's end installs and publishes it.

    The pool owns its ``phase`` from ``submit()`` on: it ends there (the install's save, or a
    failure), or in ``abort()``."""

    target: CompileTarget
    name: str  # the module's class name, for logs
    call: FlatCall
    signature: CallSignature
    captured: CapturedCall
    phase: CompilePhase
    worker: WorkerCompile


class CompilePool:
    """``workers`` compile worker processes at most at once (0: compiles happen inline)."""

    def __init__(self, workers: int, defer: bool = False) -> None:
        self.workers = workers
        self.accepting = False  # from start() to close(): compiles are taken
        self._defer = defer
        self._pending: list[PendingCompile] = []
        self._deferred: list[DeferredCall] = []
        self._standby: StandbyWorkers | None = None  # from start(), with workers

    @property
    def deferring(self) -> bool:
        """New call signatures are noted for later, not compiled now."""
        return self.accepting and self._defer

    def defer(
        self, target: CompileTarget, name: str, call: FlatCall, signature: CallSignature
    ) -> None:
        """Note ``call`` (its tensors are kept) for the switchover, in this grad mode."""
        self._deferred.append(
            DeferredCall(
                target,
                name,
                call,
                signature,
                time.time(),
                torch.is_grad_enabled(),
                torch.is_inference_mode_enabled(),
            )
        )

    def take_deferred(self) -> list[DeferredCall]:
        """The calls deferred so far, in order; the pool forgets them."""
        deferred, self._deferred = self._deferred, []
        return deferred

    def start(self) -> None:
        """Take compiles from now on; with workers, start their processes now (standby)."""
        self.accepting = True
        if self.workers > 0 and self._standby is None:
            try:
                job_dir = private_cache_root(current_settings().local_root) / "precompiled-jobs"
            except OSError as exc:
                logger.warning("precompiled: no dir for compile jobs (%s): compiling inline", exc)
                return
            self._standby = StandbyWorkers(self.workers, job_dir, self._threads())
            self._standby.start()

    def close(self) -> None:
        """No compiles from now on (those handed over are still collected by ``finish()``).
        Nothing deferred, nothing more goes to a worker: the standby workers stop."""
        self.accepting = False
        if not (self._defer and self._deferred):
            self.retire_standby()

    def retire_standby(self) -> None:
        """Stop the workers that wait for a job (no more are expected; one still handed out
        is started then)."""
        if self._standby is not None:
            self._standby.retire()

    def submit(
        self,
        target: CompileTarget,
        name: str,
        call: FlatCall,
        signature: CallSignature,
        captured: CapturedCall,
        phase: CompilePhase,
    ) -> None:
        """Hand ``captured`` to a worker (waiting for a free one), and its compile's ``phase``
        with it; :class:`NotPrecompilable` if it cannot be handed over (``phase`` is the
        caller's still)."""
        if self._standby is None:
            raise NotPrecompilable("no compile workers")
        deadline = current_settings().deadline
        while sum(p.worker.running for p in self._pending) >= self.workers:
            next(p for p in self._pending if p.worker.running).worker.wait(deadline)
        worker = WorkerCompile(captured, self._standby.take(deadline))
        self._pending.append(PendingCompile(target, name, call, signature, captured, phase, worker))
        logger.info(
            "precompiled %s %s: captured (Dynamo %.1f s); compiling in a worker",
            name,
            signature.label,
            captured.capture_s,
        )

    def abort(self, why: str) -> None:
        """Stop the workers (the block failed, or the runner stops: ``why``): nothing of theirs
        is installed or published."""
        self._deferred.clear()
        if self._standby is not None:
            self._standby.retire()
        for pending in list(self._pending):
            pending.phase.failed(why)  # first: the kill fails the collecting thread's result
            pending.worker.kill()
        self._pending.clear()
        self._close_standby()

    def finish(
        self, on_done: Callable[[PendingCompile, CompiledCall | None, str], None] | None = None
    ) -> None:
        """Collect every worker's artifact: check it against eager, serve and publish it (its
        first call, and its CUDA graph capture, happen here, not in a request). ``on_done``
        hears of each: the compile, or None and why not. Nothing goes to a worker after it."""
        self.retire_standby()
        try:
            self._collect(on_done)
        finally:
            self._close_standby()

    def _threads(self) -> int:
        """Each worker's share of the cores (``TORCHINDUCTOR_COMPILE_THREADS``)."""
        return (os.cpu_count() or 1) // self.workers

    def _close_standby(self) -> None:
        """End the workers' starting thread, once no worker compiles any more."""
        if self._standby is not None and not any(p.worker.running for p in self._pending):
            self._standby.close()

    def _collect(
        self, on_done: Callable[[PendingCompile, CompiledCall | None, str], None] | None
    ) -> None:
        deadline = current_settings().deadline
        while self._pending:  # abort() (another thread) kills and forgets what is left
            pending = self._pending[0]
            label = pending.signature.label
            inference = any(t.is_inference() for t in pending.call.tensors)
            try:
                artifact, seconds = pending.worker.result(deadline)
                with GPU_GATE.step(), torch.inference_mode(inference), torch.no_grad():
                    compiled = checked_call(
                        pending.captured, artifact, seconds, pending.worker.artifact_path
                    )
                    pending.target.install(pending.call, pending.signature, compiled, pending.phase)
                if on_done is not None:
                    on_done(pending, compiled, "")
            except NotPrecompilable as exc:
                logger.warning(
                    "precompiled %s: %s was not compiled (%s): runs %s",
                    pending.name,
                    label,
                    exc,
                    pending.target.fallback,
                )
                pending.phase.failed(exc)
                pending.target.use_fallback(pending.signature)
                if on_done is not None:
                    on_done(pending, None, str(exc))
                if time.time() >= deadline:  # no time left for the others either
                    later, self._pending = self._pending[1:], []
                    for left in later:
                        left.worker.kill()
                        left.phase.failed(NO_TIME_LEFT)
                        left.target.use_fallback(left.signature)
                        if on_done is not None:
                            on_done(left, None, NO_TIME_LEFT)
                    return
            except BaseException as exc:
                pending.phase.failed(exc)
                raise
            finally:
                self._pending = [p for p in self._pending if p is not pending]
                pending.worker.discard()  # whatever the store did not adopt
