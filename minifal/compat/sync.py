"""``fal.sync_dir``: put a local directory where every runner can read it.

On fal, ``sync_dir(local, "/data/x")`` uploads ``local`` (less its ``.gitignore``d files) to the
shared ``/data`` volume, skipping the upload when the content hash matches. The local meaning is
the same with minifal's data dir for ``/data``: the directory is copied to ``DATA_DIR/x``
(``--data-dir``, ``$MINIFAL_DATA_DIR``, ``/data`` or ``./.minifal/data``), replaced at once (a
copy beside it, then renamed), and skipped when its ``.fal_hash`` already matches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from minifal.compat.ignore_patterns import IgnoreRules
from minifal.host.data_dir import data_dir

HASH_FILE = ".fal_hash"
FAL_DATA_PREFIX = "/data/"


def _synced_files(root: Path) -> list[str]:
    """Relative paths of the files to copy, sorted, without those ``root/.gitignore`` lists."""
    gitignore = root / ".gitignore"
    rules = IgnoreRules(gitignore.read_text().splitlines() if gitignore.is_file() else [])
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            relative = (Path(directory) / name).relative_to(root).as_posix()
            if name != HASH_FILE and not rules.ignores(relative):
                found.append(relative)
    return sorted(found)


def directory_hash(root: Path, files: list[str]) -> str:
    """sha256 over each file's relative path and content."""
    digest = hashlib.sha256()
    for relative in files:
        digest.update(relative.encode() + b"\0")
        digest.update((root / relative).read_bytes())
    return digest.hexdigest()


def _target_dir(remote_dir: str) -> tuple[str, Path]:
    """fal's returned path (relative to ``/data``) and where it is in this data dir."""
    if not remote_dir.startswith(FAL_DATA_PREFIX):
        raise ValueError(
            "'remote_dir' must be an absolute path starting with `/data`, e.g. '/data/sync/my_dir'"
        )
    relative = remote_dir.removeprefix(FAL_DATA_PREFIX).strip("/")
    base = data_dir().resolve()
    target = (base / relative).resolve()
    if not relative or target == base or base not in target.parents:
        raise ValueError(f"'remote_dir' must name a directory inside /data, got {remote_dir!r}")
    return relative, target


def sync_dir(local_dir: str | Path, remote_dir: str, force_upload: bool = False) -> str:
    """Copy ``local_dir`` to ``remote_dir`` (``/data/...``) in the data dir; returns the path
    relative to ``/data``, as fal does."""
    source = Path(os.path.expanduser(local_dir))
    if not source.is_dir():
        raise NotADirectoryError(f"{local_dir} is not a directory")
    relative, target = _target_dir(remote_dir)
    files = _synced_files(source)
    local_hash = directory_hash(source, files)
    print(f"Syncing {local_dir} with {relative}...")
    marker = target / HASH_FILE
    if not force_upload and marker.is_file() and marker.read_text() == local_hash:
        print(f"{relative} already uploaded and matches {local_dir}")
        return relative

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.sync-{os.getpid()}")
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for relative_file in files:
            destination = staging / relative_file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative_file, destination)
        staging.mkdir(parents=True, exist_ok=True)
        (staging / HASH_FILE).write_text(local_hash)
        if target.exists():
            target.rename(retired)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    print("Done")
    return relative
