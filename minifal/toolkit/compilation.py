"""``fal.toolkit.compilation``: the compiled-kernel cache and the GPU type, at fal's path.

The cache itself is :mod:`minifal.compiled.cache` (docs/compile-cache.md); the paths
below are fal's constants with their local meaning.
"""

from __future__ import annotations

from pathlib import Path

from minifal.compiled.cache import (
    load_inductor_cache,
    sync_inductor_cache,
    synchronized_inductor_cache,
)
from minifal.host.data_dir import data_dir
from minifal.host.gpu import get_gpu_type

LOCAL_INDUCTOR_CACHE_DIR = Path("/tmp/inductor-cache/")
"""fal's one cache dir per host. Informational: each minifal runner gets a private dir of its
own (``compile_cache.local_dir``), so two runners never read each other's half-written files."""

GLOBAL_INDUCTOR_CACHES_DIR = data_dir() / "inductor-caches"
"""Where published caches live: ``DATA_DIR/inductor-caches`` (``/data/inductor-caches`` on fal)."""

PERSISTENT_TMP_DIR = data_dir() / "tmp"
"""fal's scratch dir on the persistent volume: ``DATA_DIR/tmp``."""

__all__ = [
    "GLOBAL_INDUCTOR_CACHES_DIR",
    "LOCAL_INDUCTOR_CACHE_DIR",
    "PERSISTENT_TMP_DIR",
    "get_gpu_type",
    "load_inductor_cache",
    "sync_inductor_cache",
    "synchronized_inductor_cache",
]
