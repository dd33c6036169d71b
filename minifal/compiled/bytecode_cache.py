"""A shared bytecode cache in the data dir, for images whose site-packages ships none.

Python compiles each module it imports from source unless its ``.pyc`` sits beside it. Images
built with ``PYTHONDONTWRITEBYTECODE=1`` (a common Dockerfile line) or ``pip install
--no-compile`` pay that again in every process: on the GPU image this was measured on, 4.5 s of a
warm SD-Turbo runner's 12.4 s of imports and artifact loads were ``builtins.compile`` over 1,397
modules (BENCHMARKS.md, section 5). With the cache on, runners keep bytecode under
``<data dir>/pycache`` (``sys.pycache_prefix``, ``PYTHONPYCACHEPREFIX`` for child processes): the
first runner writes it and every later one reads it. Python checks each ``.pyc`` against its
source (mtime and size) and writes it atomically, so runners that share it at once are safe.

``MINIFAL_BYTECODE_CACHE``: ``auto`` (the default: on when the installed packages have no
bytecode beside their sources), ``on`` or ``off``. A ``PYTHONPYCACHEPREFIX`` of the user's own
always wins.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from minifal.host import envs

logger = logging.getLogger("minifal.runner")

# Heavy packages whose bytecode tells how the environment was installed; the first found decides.
PROBES = ("torch", "transformers", "diffusers", "fastapi", "pydantic")
CACHE_DIR_NAME = "pycache"


def bytecode_installed(probes: tuple[str, ...] = PROBES) -> bool | None:
    """Whether the first installed probe package has bytecode beside its source (None: none found).

    Finds the package without importing it.
    """
    for name in probes:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        cached = os.path.join(
            os.path.dirname(spec.origin),
            "__pycache__",
            f"{Path(spec.origin).stem}.{sys.implementation.cache_tag}.pyc",
        )
        return os.path.exists(cached)
    return None


def bytecode_cache_dir(
    data_dir: Path, environ: Mapping[str, str], installed: bool | None = None
) -> Path | None:
    """The cache dir runners should use, or None (off, the user's own prefix, or not needed).

    ``installed`` is ``bytecode_installed()``'s answer, asked only in ``auto`` mode when not given.
    """
    try:
        mode = envs.BYTECODE_CACHE.get(environ)
    except ValueError as exc:
        logger.warning("%s; using auto", exc)
        mode = "auto"
    if mode == "off" or environ.get("PYTHONPYCACHEPREFIX"):
        return None
    if mode == "auto":
        if installed is None:
            installed = bytecode_installed()
        if installed is not False:
            return None
    return data_dir / CACHE_DIR_NAME


def configure_environment(
    env: MutableMapping[str, str], data_dir: Path, installed: bool | None = None
) -> Path | None:
    """Point ``env`` (a child's environment, or ``os.environ``) at the cache when the rules say
    so, creating the dir; returns it, or None."""
    cache_dir = bytecode_cache_dir(data_dir, env, installed)
    if cache_dir is None:
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("bytecode cache %s: cannot create it (%s); not used", cache_dir, exc)
        return None
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return cache_dir


def enable_bytecode_cache(data_dir: Path) -> Path | None:
    """Turn the cache on in this process and its future children when the rules say so (a
    runner the fleet started already has it from its environment)."""
    if sys.pycache_prefix:
        return None
    cache_dir = configure_environment(os.environ, data_dir)
    if cache_dir is not None:
        sys.pycache_prefix = str(cache_dir)
        sys.dont_write_bytecode = False
        logger.info("bytecode cache: %s (the installed packages ship no bytecode)", cache_dir)
    return cache_dir
