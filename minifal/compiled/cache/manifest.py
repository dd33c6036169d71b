"""Content manifests of a local cache dir: relative path -> sha256 of the file's bytes.

fal hashes file *names*; a kernel rewritten under the same name then goes unnoticed. Here the
manifest hashes contents, and a scan reuses the hash of a file whose size and mtime did not change
since the previous scan, so re-scanning a 10k-file UNet cache costs stat calls, not reads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

Manifest = dict[str, str]  # relative posix path -> sha256 hex

_CHUNK = 1 << 20


def is_cache_file(relpath: str) -> bool:
    """Files worth sharing: not Inductor's lock files nor half-written temp files."""
    parts = relpath.split("/")
    if "locks" in parts[:-1] or parts[-1].endswith(".lock"):
        return False
    # Triton stages a kernel in "tmp.pid_<pid>_<id>/" and Inductor writes "tmp*" before renaming.
    return not any(part.startswith(("tmp", ".tmp")) or ".tmp" in part for part in parts)


def manifest_digest(manifest: Mapping[str, str]) -> str:
    """fal's ``dir_hash``, but over contents: equal digests mean equal trees."""
    digest = hashlib.sha256()
    for relpath in sorted(manifest):
        digest.update(f"{relpath}\0{manifest[relpath]}\n".encode())
    return digest.hexdigest()


def new_or_changed(current: Mapping[str, str], known: Mapping[str, str]) -> Manifest:
    """Entries of ``current`` that ``known`` lacks or holds with other contents."""
    return {path: h for path, h in current.items() if known.get(path) != h}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class DirScanner:
    """Scans one local dir, remembering (size, mtime) -> hash between scans.

    ``include`` narrows what counts as this dir's contents (and so what gets published).
    """

    root: Path
    include: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        self._seen: dict[str, tuple[int, int, str]] = {}

    def trust(self, manifest: Mapping[str, str]) -> None:
        """Take hashes of files just unpacked from a verified segment instead of re-reading them."""
        for relpath, sha in manifest.items():
            try:
                stat = (self.root / relpath).stat()
            except OSError:
                continue
            self._seen[relpath] = (stat.st_size, stat.st_mtime_ns, sha)

    def scan(self) -> Manifest:
        manifest: Manifest = {}
        if not self.root.is_dir():
            return manifest
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                path = Path(dirpath, name)
                relpath = path.relative_to(self.root).as_posix()
                if not is_cache_file(relpath) or (self.include and not self.include(relpath)):
                    continue
                try:
                    stat = path.stat()
                    previous = self._seen.get(relpath)
                    if previous and previous[:2] == (stat.st_size, stat.st_mtime_ns):
                        sha = previous[2]
                    else:
                        sha = file_sha256(path)
                except OSError:
                    continue  # removed while scanning
                self._seen[relpath] = (stat.st_size, stat.st_mtime_ns, sha)
                manifest[relpath] = sha
        return manifest
