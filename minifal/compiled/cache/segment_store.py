"""The shared artifact of one key and fingerprint: an append-only set of content-addressed segments.

A publish never rewrites what is there: it adds one segment holding the files the publisher has and
the store lacks, named by the sha256 of its bytes, written to a temp name and renamed into place.
So two runners publishing at once both land (merge, not last-writer-wins), a reader never sees
half a segment, and a truncated or corrupt segment is detected by its name alone. Loading
unpacks every segment in publish order.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minifal.compiled.cache.pack_formats import STORE_FORMAT, CorruptArchive, TarFormat

_SEGMENT_NAME = re.compile(r"^([0-9a-f]{64})(\.[a-z.]+)$")


@dataclass(frozen=True)
class LoadedSegment:
    name: str
    manifest: dict[str, str]
    nbytes: int


class _HashingWriter:
    """A write-only file that hashes what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.nbytes = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.nbytes += len(data)
        return self._out.write(data)


class SegmentStore:
    def __init__(self, segments_dir: Path, fmt: TarFormat = STORE_FORMAT) -> None:
        self.segments_dir = segments_dir
        self.fmt = fmt

    def names(self) -> list[str]:
        """Published segments, oldest first; temp and quarantined files are not listed."""
        try:
            entries = [e for e in os.scandir(self.segments_dir) if _SEGMENT_NAME.match(e.name)]
        except FileNotFoundError:
            return []
        entries = [e for e in entries if e.name.endswith(self.fmt.suffix)]
        return [e.name for e in sorted(entries, key=_mtime_then_name)]

    def load(self, name: str, root: Path) -> LoadedSegment:
        """Verify a segment against its name and unpack it into ``root``; CorruptArchive if bad."""
        data = (self.segments_dir / name).read_bytes()
        expected = _SEGMENT_NAME.match(name)
        if expected is None or hashlib.sha256(data).hexdigest() != expected.group(1):
            raise CorruptArchive(f"{name}: contents do not match the name ({len(data)} bytes)")
        manifest = self.fmt.unpack(data, root)
        return LoadedSegment(name=name, manifest=manifest, nbytes=len(data))

    def read_manifest(self, name: str) -> dict[str, str]:
        return self.fmt.read_manifest(self.segments_dir / name)

    def quarantine(self, name: str) -> None:
        """Move a corrupt segment aside (kept for inspection) so that nobody loads it again."""
        source = self.segments_dir / name
        source.rename(source.with_name(f"{name}.corrupt-{uuid.uuid4().hex[:8]}"))

    def publish(self, root: Path, manifest: Mapping[str, str]) -> LoadedSegment:
        """Pack ``manifest``'s files from ``root`` into a new segment; returns its name and size."""
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        temp = self.segments_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(temp, "wb") as f:
                writer = _HashingWriter(f)
                self.fmt.pack(root, manifest, writer)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            name = writer.digest.hexdigest() + self.fmt.suffix
            os.replace(temp, self.segments_dir / name)
        finally:
            temp.unlink(missing_ok=True)
        return LoadedSegment(name=name, manifest=dict(manifest), nbytes=writer.nbytes)


def _mtime_then_name(entry: os.DirEntry[str]) -> tuple[float, str]:
    try:
        return (entry.stat().st_mtime, entry.name)
    except OSError:
        return (0.0, entry.name)
