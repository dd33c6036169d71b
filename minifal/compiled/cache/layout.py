"""Where a cache key's artifacts live in the shared data dir (pure path arithmetic).

::

    <data dir>/inductor-caches/<GPU_TYPE>/<key>/            key may hold "/": sd-turbo/v1
        torch-2.11.0+cu130-3f2a.../                         one directory per build fingerprint
            fingerprint.json                                what the kernels were built with
            segments/<sha256>.tar                           content-addressed, append-only packs
            leases/lease-<generation>.json                  who is compiling now (see lease.py)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CACHES_DIR_NAME = "inductor-caches"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def key_parts(cache_key: str) -> list[str]:
    """A cache key as safe path components: no empty, ``.`` or ``..`` parts, no odd characters."""
    parts = []
    for raw in cache_key.split("/"):
        part = _UNSAFE.sub("_", raw.strip())
        if part in ("", "."):
            continue
        parts.append("_.." if part == ".." else part)
    return parts or ["_"]


@dataclass(frozen=True)
class CacheLocation:
    """The shared paths of one (data dir, GPU type, key, fingerprint)."""

    data_dir: Path
    gpu_type: str
    cache_key: str
    fingerprint_dir_name: str

    @property
    def key_dir(self) -> Path:
        return self.data_dir.joinpath(CACHES_DIR_NAME, self.gpu_type, *key_parts(self.cache_key))

    @property
    def version_dir(self) -> Path:
        return self.key_dir / self.fingerprint_dir_name

    @property
    def fingerprint_file(self) -> Path:
        return self.version_dir / "fingerprint.json"

    @property
    def segments_dir(self) -> Path:
        return self.version_dir / "segments"

    @property
    def leases_dir(self) -> Path:
        return self.version_dir / "leases"
