"""Inductor's torch_key() kept in the data dir (``compile_cache/torch_source_key.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from child_path import repo_pythonpath

pytest.importorskip("torch")

from minifal.compiled.cache.torch_source_key import (
    DIR_NAME,
    install_digest,
    sources_digest,
)

REPO = Path(__file__).resolve().parents[1]
PRIME = (
    "from minifal.compiled.cache.torch_source_key import prime_torch_key; "
    "prime_torch_key(); from torch._inductor import codecache; print(codecache.torch_key().hex())"
)


@pytest.mark.unit
def test_the_digest_follows_package_sources_only(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "include").mkdir()
    for name in ("__init__.py", "sub/__init__.py", "sub/m.py"):
        (package / name).write_text("x = 1\n")
    (package / "include" / "h.py").write_text("not a package\n")
    before = sources_digest(package)
    (package / "include" / "h.py").write_text("changed, but torch_key() never reads it\n")
    assert sources_digest(package) == before
    os.utime(package / "sub" / "m.py", ns=(1, 1))
    assert sources_digest(package) != before


@pytest.mark.unit
def test_an_installed_wheel_is_known_by_its_record(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("x = 1\n")
    assert install_digest(package).startswith("sources-")  # a checkout: its sources
    record = tmp_path / "pkg-1.0.dist-info" / "RECORD"
    record.parent.mkdir()
    record.write_text("pkg/__init__.py,sha256=...,6\n")
    first = install_digest(package)
    assert first.startswith("record-")
    os.utime(record, ns=(1, 1))  # reinstalled
    assert install_digest(package) != first


def prime(data_dir: Path) -> str:
    env = {**os.environ, "MINIFAL_DATA_DIR": str(data_dir), "PYTHONPATH": repo_pythonpath()}
    done = subprocess.run(
        [sys.executable, "-c", PRIME], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.process
def test_the_first_process_stores_the_key_and_later_ones_take_it(tmp_path: Path) -> None:
    computed = prime(tmp_path)
    (stored,) = (tmp_path / DIR_NAME).iterdir()
    assert stored.read_bytes().hex() == computed
    stored.write_bytes(b"\x01" * 32)  # a later process takes what is stored, computing nothing
    assert prime(tmp_path) == "01" * 32
