"""The private cache dir of this runner process.

fal points every process of a host at one ``/tmp/inductor-cache``; two runners then read each
other's half-written files and a dir hash taken by one includes the other's kernels. Here each
process gets its own dir (removed at exit) holding Inductor's cache and Triton's, which are what
gets shared.

Where: ``MINIFAL_CACHE_LOCAL_ROOT`` if set; else ``/dev/shm`` when it is a memory file system
with at least 8 GiB free; else the system temp dir. A warm runner writes thousands of small
files there (every Triton kernel of every artifact it loads, its compiled graphs), from a
thread that shares the GIL with the weight loading: on an H200 host's disk-backed ``/tmp`` that
was 8-13 s of artifact loading, in memory 8-9 s, and the runner was ready 3-5 s sooner
(BENCHMARKS.md, section 5, run 12). The dir is a few hundred MB for SD-Turbo, held in memory
while the runner lives. Dirs left by runners that were killed are removed by the next one: each
process holds a lock on a file in its dir while it lives (a lock, not a pid, because processes in
other pid namespaces may share the dir's parent).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from minifal.runner_contract import export_to_process

MEMORY_DIR = Path("/dev/shm")
MEMORY_DIR_MIN_FREE = 8 << 30
PREFIX = "minifal-inductor-"

OWNER_FILE = ".owner"

_root: Path | None = None
_owner_fd: int | None = None  # held open (and locked) for the life of the process


def private_cache_root(parent: str | None = None) -> Path:
    """Create (once per process) the private dir and point Inductor and Triton at it."""
    global _root, _owner_fd
    if _root is None or not _root.is_dir():
        where = Path(parent) if parent else default_parent()
        remove_orphans(where)
        _root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=where))
        _owner_fd = os.open(_root / OWNER_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(_owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        atexit.register(shutil.rmtree, _root, ignore_errors=True)
    # Inductor and Triton read their cache dirs from the environment (compile workers inherit it)
    export_to_process(
        {
            "TORCHINDUCTOR_CACHE_DIR": str(_root / "inductor"),
            "TRITON_CACHE_DIR": str(_root / "triton"),
        }
    )
    return _root


def default_parent(memory_dir: Path = MEMORY_DIR) -> Path:
    """``memory_dir`` when it is writable and has room, else the system temp dir."""
    try:
        stats = os.statvfs(memory_dir)
        if stats.f_bavail * stats.f_frsize >= MEMORY_DIR_MIN_FREE and os.access(
            memory_dir, os.W_OK
        ):
            return memory_dir
    except OSError:
        pass
    return Path(tempfile.gettempdir())


def remove_orphans(parent: Path) -> None:
    """Remove the private dirs in ``parent`` whose process is gone (killed before its atexit):
    nobody holds the lock on their owner file."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(PREFIX)]
    except OSError:
        return
    for entry in entries:
        try:
            fd = os.open(os.path.join(entry.path, OWNER_FILE), os.O_RDWR)
        except OSError:
            continue  # not ours to judge (no owner file, or another user's)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its process lives
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)
