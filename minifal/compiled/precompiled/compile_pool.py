"""``CompilePool``: the block's compiles, inline or in worker processes (``compile_workers.py``).

Compiles are taken while the block is open, and only then: after it an uncovered call runs
the fallback. With workers (``MINIFAL_PRECOMPILED_WORKERS``, read by the block), a captured call
is handed to a worker (waiting for a free one) while the dispatch answers the call eagerly;
``finish()``, at the block's end, collects each worker's artifact, checks it against eager on
the call it was captured from and hands it to its module, which serves and publishes it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from minifal.compiled.cache.local_dir import private_cache_root
from minifal.compiled.cache.settings import current_settings
from minifal.compiled.call_signature import CallSignature, FlatCall
from minifal.compiled.precompiled.compile_workers import WorkerCompile
from minifal.compiled.precompiled.graph_compile import (
    CapturedCall,
    CompiledCall,
    NotPrecompilable,
    checked_call,
)

logger = logging.getLogger("minifal.precompiled")


class CompileTarget(Protocol):
    """What a worker's compile is handed back to (a ``PrecompiledModule``)."""

    @property
    def fallback(self) -> str: ...

    def install(
        self, call: FlatCall, signature: CallSignature, compiled: CompiledCall, started: float
    ) -> Callable[[FlatCall], Any]: ...

    def use_fallback(self, signature: CallSignature) -> None: ...


@dataclass(frozen=True)
class PendingCompile:
    """A captured call that a worker compiles; the block's end installs and publishes it."""

    target: CompileTarget
    name: str  # the module's class name, for logs
    call: FlatCall
    signature: CallSignature
    captured: CapturedCall
    started: float
    worker: WorkerCompile


class CompilePool:
    """``workers`` compile worker processes at most at once (0: compiles happen inline)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.accepting = False  # from start() to close(): compiles are taken
        self._pending: list[PendingCompile] = []

    def start(self) -> None:
        self.accepting = True

    def close(self) -> None:
        """No compiles from now on (those handed over are still collected by ``finish()``)."""
        self.accepting = False

    def submit(
        self,
        target: CompileTarget,
        name: str,
        call: FlatCall,
        signature: CallSignature,
        captured: CapturedCall,
        started: float,
    ) -> None:
        """Hand ``captured`` to a worker (waiting for a free one); :class:`NotPrecompilable` if
        it cannot be handed over."""
        deadline = current_settings().deadline
        while sum(p.worker.running for p in self._pending) >= self.workers:
            next(p for p in self._pending if p.worker.running).worker.wait(deadline)
        threads = (os.cpu_count() or 1) // self.workers
        job_dir = private_cache_root(current_settings().local_root) / "precompiled-jobs"
        worker = WorkerCompile(captured, job_dir, threads)
        self._pending.append(
            PendingCompile(target, name, call, signature, captured, started, worker)
        )
        logger.info(
            "precompiled %s %s: captured (Dynamo %.1f s); compiling in a worker",
            name,
            signature.label,
            captured.capture_s,
        )

    def abort(self) -> None:
        """Stop the workers (the block failed): nothing of theirs is installed or published."""
        for pending in self._pending:
            pending.worker.kill()
        self._pending.clear()

    def finish(self) -> None:
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
                    runner = pending.target.install(
                        pending.call, pending.signature, compiled, pending.started
                    )
                    runner(pending.call)
            except NotPrecompilable as exc:
                logger.warning(
                    "precompiled %s: %s was not compiled (%s): runs %s",
                    pending.name,
                    label,
                    exc,
                    pending.target.fallback,
                )
                pending.target.use_fallback(pending.signature)
                if time.time() >= deadline:  # no time left for the others either
                    for later in pending_list[position + 1 :]:
                        later.worker.kill()
                        later.target.use_fallback(later.signature)
                    return
            finally:
                pending.worker.discard()  # whatever the store did not adopt
