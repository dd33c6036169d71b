"""``ArtifactStore``: one cache key's artifacts in the shared store, for one block.

``load()`` does what ``load_inductor_cache(key)`` does, for the precompiled path's files only
(fill the private dir from the shared store, or take the compile lease, or wait for its holder's
publish) and names the dir the artifacts are in; ``save()`` puts a fresh artifact there and
ends its ``precompiled.compile`` phase (``compile_phase.py``); ``publish()`` is
``sync_inductor_cache(key)``: it publishes what was saved (merge, never overwrite) and releases
the lease. No threads here: the warm loader calls ``load()``, the dispatch ``save()``, the
block's end ``publish()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from minifal.compiled.cache import sync_inductor_cache
from minifal.compiled.cache.api import load_cache_scope
from minifal.compiled.cache.local_dir import private_cache_root
from minifal.compiled.cache.settings import current_settings
from minifal.compiled.call_signature import CallSignature
from minifal.compiled.precompiled.artifact_files import (
    ArtifactDir,
    ArtifactMeta,
    belongs_to_artifacts,
)
from minifal.compiled.precompiled.compile_phase import CompilePhase
from minifal.compiled.precompiled.graph_compile import CompiledCall

logger = logging.getLogger("minifal.precompiled")


class ArtifactStore:
    """The shared store's artifacts of ``cache_key``, as this process's private dir holds them."""

    def __init__(self, cache_key: str) -> None:
        self.cache_key = cache_key
        self.artifact_dir: ArtifactDir | None = None  # set by load(): where artifacts are
        self._dir_hash = ""
        self.compiled = 0  # saved for publishing
        self.not_saved = 0  # compiled, but could not be saved
        self.capture_s = 0.0  # Dynamo's seconds of the saved and unsaved compiles

    def load(self, keep_waiting: Callable[[], bool] | None = None) -> ArtifactDir | None:
        """Fill the private dir with this key's artifacts (may wait for another runner's
        compile, bounded by the startup deadline, while ``keep_waiting()``); where they are, or
        None when the private dir could not be set up. Raises what the store raises: a failed
        load is a compile. Imports no compiler: an artifact's load prepares Inductor
        (``inductor_setup.py``), and an empty store loads none."""
        self._dir_hash = load_cache_scope(self.cache_key, belongs_to_artifacts, keep_waiting)
        if self._dir_hash:
            self.artifact_dir = ArtifactDir(private_cache_root(current_settings().local_root))
        return self.artifact_dir

    def save(
        self,
        module_class: type,
        module_digest: str,
        signature: CallSignature,
        compiled: CompiledCall,
        phase: CompilePhase,
    ) -> None:
        """Save a fresh artifact where ``publish()`` will publish it and end its compile's
        ``phase``; never raises."""
        self.capture_s += compiled.capture_s
        meta = ArtifactMeta(
            module_class=f"{module_class.__module__}.{module_class.__qualname__}",
            module_digest=module_digest,
            signature_digest=signature.digest,
            signature_label=signature.label,
            input_plan=compiled.input_plan,
            out_spec=compiled.out_spec,
            capture_s=round(compiled.capture_s, 3),
            compile_s=round(compiled.compile_s, 3),
            first_called_at=phase.started,
            input_layouts=[list(layout) for layout in compiled.input_layouts],
            grad_enabled=compiled.grad_enabled,
        )
        saved = False
        if self.artifact_dir is not None:
            try:
                self.artifact_dir.save(meta, compiled.artifact, compiled.saved_at)
                saved = True
            except Exception as exc:  # a full disk or an unsaveable graph costs a recompile later
                logger.warning(
                    "precompiled %r: could not save %s (%s)", self.cache_key, signature.label, exc
                )
        if saved:
            self.compiled += 1
        else:
            self.not_saved += 1
        phase.succeeded(
            dynamo_s=round(compiled.capture_s, 3),
            inductor_s=round(compiled.compile_s, 3),
            max_abs_diff=compiled.max_abs_diff,
            in_worker=compiled.saved_at is not None,
            saved=saved,
        )
        logger.info(
            "precompiled %s %s: compiled (Dynamo %.1f s, Inductor %.1f s)",
            module_class.__name__,
            signature.label,
            compiled.capture_s,
            compiled.compile_s,
        )

    def publish(self) -> None:
        """Publish what was saved and release the lease. Nothing saved, nothing to publish: no
        scan of the private dir (0.5 s on a warm GPU runner, whose dir holds every loaded
        artifact's unpacked cache entries)."""
        sync_inductor_cache(self.cache_key, self._dir_hash, scan=self.compiled > 0)
