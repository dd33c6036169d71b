"""Find the Triton tuning results a warm runner unpacked, wherever the compiling runner lived.

Inductor keeps each Triton kernel's autotuning result beside the kernel, as
``<cache dir>/<xx>/<key>.best_config``, and looks it up in the directory of the kernel's file as
recorded when it was compiled. A kernel that comes out of the FX graph cache carries the absolute
path of the process that compiled it. fal's recipe gives every process of a host the same
``/tmp/inductor-cache``, so the path matches there (at the price of the races in
``local_dir.py``); each minifal runner has its own private dir, so a warm runner looked for the
results in a dir that is not its own, missed, and benchmarked every kernel with several
configs again: 7-10 s of every warm SD-Turbo start on an H200 (BENCHMARKS.md, section 5).

``redirect_autotune_lookups()`` makes a lookup that points into another minifal private dir
look in the same subdir of this process's dir, where the shared cache was unpacked. The key
(the kernel's source hash and torch's version) is unchanged, so a hit is that kernel's own
result. Lookups anywhere else are left alone. It wraps one private torch function,
``AutotuneCache.create(inductor_meta, filename, configs_hash)`` (the same from torch 2.6 to
2.13); when it is not there, nothing is patched and warm runners re-tune as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from minifal.compiled.cache.local_dir import PREFIX
from minifal.compiled.torch_internals import replace_autotune_cache_create

logger = logging.getLogger("minifal.compile_cache")

_installed = False


def redirected_dir(kernel_dir: str, own_cache_dir: str) -> str:
    """Where to look for the tuning results of a kernel recorded in ``kernel_dir``.

    ``kernel_dir`` is ``<private root>/inductor/<xx>``; when that root is another minifal
    process's private dir, the answer is ``<own_cache_dir>/<xx>``, else ``kernel_dir`` itself.
    """
    path = PurePath(kernel_dir)
    if len(path.parts) < 3 or path.parent.name != "inductor":
        return kernel_dir
    root = path.parent.parent
    own = PurePath(own_cache_dir)
    if not root.name.startswith(PREFIX) or own.parent == root:
        return kernel_dir
    return str(own / path.name)


def redirected_file(kernel_file: str, own_cache_dir: str) -> str:
    """``kernel_file`` with its dir passed through ``redirected_dir``."""
    kernel_dir, name = os.path.split(kernel_file)
    redirected = redirected_dir(kernel_dir, own_cache_dir)
    return kernel_file if redirected == kernel_dir else os.path.join(redirected, name)


def redirect_autotune_lookups() -> bool:
    """Install the redirect in this process (once); True when it is in place."""
    global _installed
    if _installed:
        return True

    def redirecting(original: Callable[..., Any]) -> Callable[..., Any]:
        def create(inductor_meta: Any, filename: str, configs_hash: str) -> Any:
            own = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            if own and filename:
                filename = redirected_file(filename, own)
            return original(inductor_meta, filename, configs_hash)

        return create

    try:
        replace_autotune_cache_create(redirecting)
    except (ImportError, KeyError, AttributeError) as exc:
        logger.info("autotune results stay where Inductor looks for them (%s)", exc)
        return False
    _installed = True
    return True
