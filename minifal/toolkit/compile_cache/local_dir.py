"""The private cache dir of this runner process.

fal points every process of a host at one ``/tmp/inductor-cache``; two runners then read each
other's half-written files and a dir hash taken by one includes the other's kernels. Here each
process gets its own dir (removed at exit) holding Inductor's cache and Triton's, which are what
gets shared.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_root: Path | None = None


def private_cache_root(parent: str | None = None) -> Path:
    """Create (once per process) the private dir and point Inductor and Triton at it."""
    global _root
    if _root is None or not _root.is_dir():
        _root = Path(tempfile.mkdtemp(prefix=f"minifal-inductor-{os.getpid()}-", dir=parent))
        atexit.register(shutil.rmtree, _root, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_root / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(_root / "triton")
    return _root
