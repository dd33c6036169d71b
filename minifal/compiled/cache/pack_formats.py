"""Archive formats for a set of cache files, each with its manifest as the first member.

The store publishes plain ``tar``; ``tar.gz`` and ``zip`` (fal's format) stay for the benchmark.
Measured on the SD-Turbo UNet's cache (H100, 3220 files, 118 MB): tar 125 MB, pack 0.42 s, unpack
0.50 s; tar.gz 24 MB, 1.39 s / 1.20 s; zip 21 MB, 3.33 s / 1.26 s. Compression saves 100 MB of
transfer for ~0.7 s more on every load and ~1-3 s on every publish: a gain only where the shared
filesystem reads slower than about 150 MB/s (docs/compile-cache.md).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

MANIFEST_MEMBER = "MANIFEST.json"


class CorruptArchive(Exception):
    """An archive that cannot be read back completely."""


class PackFormat(Protocol):
    name: str
    suffix: str

    def pack(self, root: Path, manifest: Mapping[str, str], out: BinaryIO) -> None: ...

    def unpack(self, data: bytes, root: Path) -> dict[str, str]: ...


def safe_relpath(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def _manifest_bytes(manifest: Mapping[str, str]) -> bytes:
    return json.dumps(dict(sorted(manifest.items())), separators=(",", ":")).encode()


def _write_member(root: Path, relpath: str, content: bytes | memoryview, mode: int) -> None:
    if not safe_relpath(relpath):
        raise CorruptArchive(f"unsafe member name {relpath!r}")
    target = root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    target.chmod(mode & 0o777 or 0o644)


@dataclass(frozen=True)
class TarFormat:
    name: str
    suffix: str
    compression: str  # "" or "gz"
    level: int = 1

    def pack(self, root: Path, manifest: Mapping[str, str], out: BinaryIO) -> None:
        if self.compression == "gz":
            # Python 3.11's stream mode has no compresslevel: compress around a plain stream.
            with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=self.level, mtime=0) as gz:
                self._write_tar(root, manifest, gz)  # type: ignore[arg-type]
        else:
            self._write_tar(root, manifest, out)

    @staticmethod
    def _write_tar(root: Path, manifest: Mapping[str, str], out: BinaryIO) -> None:
        with tarfile.open(fileobj=out, mode="w|") as tar:
            header = _manifest_bytes(manifest)
            info = tarfile.TarInfo(MANIFEST_MEMBER)
            info.size = len(header)
            tar.addfile(info, io.BytesIO(header))
            for relpath in sorted(manifest):
                tar.add(root / relpath, arcname=relpath, recursive=False)

    def unpack(self, data: bytes, root: Path) -> dict[str, str]:
        # An uncompressed member is a slice of ``data``: written from a view, not a copy
        # (a warm SD-Turbo runner unpacks 233 MB, under the GIL that its weight loading needs).
        view = memoryview(data)
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                manifest: dict[str, str] | None = None
                for member in tar:
                    if not member.isfile():
                        continue
                    content: bytes | memoryview
                    if self.compression:
                        extracted = tar.extractfile(member)
                        if extracted is None:
                            continue
                        content = extracted.read()
                    else:
                        content = view[member.offset_data : member.offset_data + member.size]
                        if len(content) != member.size:
                            raise CorruptArchive(f"{member.name}: truncated")
                    if member.name == MANIFEST_MEMBER:
                        manifest = json.loads(bytes(content))
                    else:
                        _write_member(root, member.name, content, member.mode)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise CorruptArchive(str(exc)) from exc
        if manifest is None:
            raise CorruptArchive("no manifest")
        return manifest

    def read_manifest(self, path: Path) -> dict[str, str]:
        """Only the first member: cheap even for a large archive."""
        try:
            with tarfile.open(path, mode="r|*") as tar:
                member = tar.next()
                extracted = tar.extractfile(member) if member is not None else None
                if member is None or member.name != MANIFEST_MEMBER or extracted is None:
                    raise CorruptArchive("no manifest")
                return json.loads(extracted.read())
        except (tarfile.TarError, EOFError, ValueError) as exc:
            raise CorruptArchive(str(exc)) from exc


@dataclass(frozen=True)
class ZipFormat:
    """fal's format: one deflated zip."""

    name: str = "zip"
    suffix: str = ".zip"

    def pack(self, root: Path, manifest: Mapping[str, str], out: BinaryIO) -> None:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST_MEMBER, _manifest_bytes(manifest))
            for relpath in sorted(manifest):
                archive.write(root / relpath, arcname=relpath)

    def unpack(self, data: bytes, root: Path) -> dict[str, str]:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                manifest = json.loads(archive.read(MANIFEST_MEMBER))
                for info in archive.infolist():
                    if info.filename != MANIFEST_MEMBER and not info.is_dir():
                        mode = (info.external_attr >> 16) & 0o777
                        _write_member(root, info.filename, archive.read(info), mode)
        except (zipfile.BadZipFile, KeyError, EOFError, ValueError) as exc:
            raise CorruptArchive(str(exc)) from exc
        return manifest


TAR = TarFormat(name="tar", suffix=".tar", compression="")
TAR_GZ = TarFormat(name="tar.gz", suffix=".tar.gz", compression="gz", level=1)
ZIP = ZipFormat()
ALL_FORMATS: dict[str, TarFormat | ZipFormat] = {f.name: f for f in (TAR, TAR_GZ, ZIP)}
STORE_FORMAT = TAR


def pack_to_bytes(fmt: PackFormat, root: Path, relpaths: Iterable[str]) -> bytes:
    """Pack without a manifest check (the benchmark's fal-style whole-dir archives)."""
    buffer = io.BytesIO()
    fmt.pack(root, dict.fromkeys(relpaths, ""), buffer)
    return buffer.getvalue()
