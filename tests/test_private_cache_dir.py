"""Where a runner's private cache dir lives, and who removes the ones killed runners left."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from minifal.compiled.cache.local_dir import (
    OWNER_FILE,
    PREFIX,
    default_parent,
    remove_orphans,
)

pytestmark = pytest.mark.unit


def make_dir(parent: Path, name: str, owner: bool = True) -> Path:
    path = parent / f"{PREFIX}{name}"
    (path / "inductor").mkdir(parents=True)
    if owner:
        (path / OWNER_FILE).touch()
    return path


def test_only_dirs_whose_owner_lock_is_free_are_removed(tmp_path: Path) -> None:
    alive = make_dir(tmp_path, "1-alive")
    orphan = make_dir(tmp_path, "2-orphan")
    unknown = make_dir(tmp_path, "3-unknown", owner=False)  # not ours to judge
    other = tmp_path / "not-a-runner"
    other.mkdir()
    fd = os.open(alive / OWNER_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its process lives
        remove_orphans(tmp_path)
    finally:
        os.close(fd)
    assert alive.is_dir() and unknown.is_dir() and other.is_dir()
    assert not orphan.exists()


def test_a_memory_dir_without_room_is_not_used(tmp_path: Path) -> None:
    assert default_parent(tmp_path / "missing") != tmp_path / "missing"
