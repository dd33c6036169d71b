"""Inductor's ``torch_key()``, kept in the data dir.

Inductor keys its caches on a hash of every Python source file of the installed torch
(``torch._inductor.codecache.torch_key``): each process reads and hashes tens of megabytes of
source the first time it loads or compiles a graph. On a warm SD-Turbo runner that was 1.6 s of
the background thread that loads the artifacts while the weights load (BENCHMARKS.md, section
5, run 11). The value only changes when those files change, so the first process stores it
under ``<data dir>/torch-key/``, named by a digest of the sources' paths, sizes and modification
times (a walk with no reads, tens of milliseconds), and every later process hands it to torch
(``torch_key.set``, which torch provides for exactly this). Where torch has no ``set``, or the
key is already computed, nothing happens.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

from minifal.data_dir import data_dir

logger = logging.getLogger("minifal.compile_cache")

DIR_NAME = "torch-key"


def sources_digest(root: Path) -> str:
    """A digest of every ``.py`` under ``root`` (path, size, mtime) and of the other files
    torch_key() reads (``.cpp``, ``.ld``): it changes whenever one of them may have."""
    hasher = hashlib.sha256(str(root).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith((".py", ".cpp", ".ld")):
                continue
            stat = os.stat(os.path.join(dirpath, name))
            hasher.update(f"{dirpath}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return hasher.hexdigest()


def prime_torch_key() -> None:
    """Give Inductor its torch_key from the data dir, or store the one it computes. Never raises."""
    try:
        import torch
        from torch._inductor import codecache
    except ImportError:
        return
    setter = getattr(codecache.torch_key, "set", None)
    if setter is None:
        return
    try:
        path = data_dir() / DIR_NAME / sources_digest(Path(torch.__file__).parent)
        try:
            stored = path.read_bytes()
        except FileNotFoundError:
            stored = b""
        if stored:
            setter(stored)
            return
        value = codecache.torch_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".tmp-{uuid.uuid4().hex}")
        temp.write_bytes(value)
        os.replace(temp, path)
    except (OSError, RuntimeError) as exc:  # RuntimeError: already computed in this process
        logger.debug("torch_key not primed (%s)", exc)
