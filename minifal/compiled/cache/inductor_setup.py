"""``prepare_inductor()``: what a process does once, right before Inductor first loads or compiles
a graph in it.

Two things make Inductor's work here cheaper or correct: its ``torch_key`` handed over from the
data dir (``torch_source_key.py``) and the redirect of Triton's tuning-result lookups into this
process's private dir (``autotune_lookup.py``). Both import Inductor (6.5-8.7 s in a fresh
process on an H100 host, BENCHMARKS.md section 15), so they wait for the first artifact load or
compile that needs them, instead of the start of a ``precompiled_modules`` block: a runner whose
store is empty serves eagerly first and loads nothing before it is ready, and the imports would
only hold the GIL while its pipeline loads. The key and the redirect are the same whenever they
are set: only their moment changes. fal's plain path (``load_inductor_cache``, followed by a
``torch.compile``) redirects at its load, as before.
"""

from __future__ import annotations

import threading

from minifal.compiled.cache.autotune_lookup import redirect_autotune_lookups
from minifal.compiled.cache.settings import current_settings
from minifal.compiled.cache.torch_source_key import prime_torch_key

_lock = threading.Lock()  # the loader's reader thread and the app's thread may both come first
_prepared = False


def prepare_inductor() -> None:
    """Prime Inductor's ``torch_key`` and redirect its autotune lookups, once per process (a
    caller that comes meanwhile waits for the first). Never raises."""
    global _prepared
    if _prepared:
        return
    with _lock:
        if _prepared:
            return
        prime_torch_key()
        if current_settings().redirect_autotune:
            redirect_autotune_lookups()
        _prepared = True
