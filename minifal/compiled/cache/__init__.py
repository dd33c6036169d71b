"""Compiled-kernel cache shared by every runner through the data dir (fal's API, without its gaps).

See docs/compile-cache.md for the design, the lease protocol and troubleshooting.
"""

from minifal.compiled.cache.api import (
    load_inductor_cache,
    sync_inductor_cache,
    synchronized_inductor_cache,
)

__all__ = ["load_inductor_cache", "sync_inductor_cache", "synchronized_inductor_cache"]
