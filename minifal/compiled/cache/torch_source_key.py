"""Inductor's ``torch_key()``, kept in the data dir.

Inductor keys its caches on a hash of every Python source file of the installed torch
(``torch._inductor.codecache.torch_key``): each process reads and hashes tens of megabytes of
source the first time it loads or compiles a graph, about a second of the background thread
that loads a warm runner's artifacts while the weights load (BENCHMARKS.md, section 5). The
value only changes when torch does, so the first process stores it under
``<data dir>/torch-key/``, named by a digest of what identifies the install, and every later
process hands it to torch (``torch_key.set``, which torch provides for this). What identifies
an install: torch's directory and its wheel's ``RECORD`` (rewritten by every install), a stat
or two; a source checkout without one is identified by every module's path, size and mtime
(a walk of thousands of files, which a thread sharing the GIL pays dearly for). A torch whose
installed files were edited in place keeps its key, as the compiled-cache fingerprint does:
remove ``<data dir>/torch-key``. Where torch has no ``set``, nothing happens.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

from minifal.compiled import torch_internals
from minifal.host.data_dir import data_dir

logger = logging.getLogger("minifal.compile_cache")

DIR_NAME = "torch-key"


def install_digest(root: Path) -> str:
    """What identifies the torch installed at ``root``: its wheel's RECORD, else its sources."""
    for record in sorted(root.parent.glob(f"{root.name}-*.dist-info/RECORD")):
        stat = record.stat()
        text = f"{root}\0{record}\0{stat.st_size}\0{stat.st_mtime_ns}"
        return "record-" + hashlib.sha256(text.encode()).hexdigest()
    return "sources-" + sources_digest(root)


def sources_digest(root: Path) -> str:
    """A digest of the path, size and mtime of every module torch_key() reads: the ``.py``
    files of ``root``'s packages (dirs with an ``__init__.py``, as ``pkgutil`` finds them; not
    ``include/`` and its thousands of headers) and Inductor's two extra files."""
    hasher = hashlib.sha256(str(root).encode())
    extra = [root / "_inductor" / "codegen" / "aoti_runtime" / "interface.cpp"]
    extra.append(root / "_inductor" / "script.ld")
    packages = [str(root)]
    while packages:
        with os.scandir(packages.pop()) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if os.path.exists(os.path.join(entry.path, "__init__.py")):
                    packages.append(entry.path)
            elif entry.name.endswith(".py"):
                _add_stat(hasher, entry.path, entry.stat())
    for path in extra:
        if path.exists():
            _add_stat(hasher, str(path), path.stat())
    return hasher.hexdigest()


def _add_stat(hasher: hashlib._Hash, path: str, stat: os.stat_result) -> None:
    hasher.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())


def prime_torch_key() -> None:
    """Give Inductor its torch_key from the data dir, or store the one it computes. Never raises."""
    try:
        import torch
    except ImportError:
        return
    setter = torch_internals.torch_key_setter()
    if setter is None:
        return
    try:
        path = data_dir() / DIR_NAME / install_digest(Path(torch.__file__).parent)
        try:
            stored = path.read_bytes()
        except FileNotFoundError:
            stored = b""
        if stored:
            setter(stored)
            return
        value = torch_internals.torch_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".tmp-{uuid.uuid4().hex}")
        temp.write_bytes(value)
        os.replace(temp, path)
    except (OSError, RuntimeError) as exc:  # RuntimeError: already computed in this process
        logger.debug("torch_key not primed (%s)", exc)
