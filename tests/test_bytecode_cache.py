"""The runners' bytecode cache in the data dir (minifal/compiled/bytecode_cache.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minifal.compiled.bytecode_cache import (
    bytecode_cache_dir,
    bytecode_installed,
    configure_environment,
)


@pytest.mark.unit
def test_auto_turns_on_only_when_packages_ship_no_bytecode(tmp_path: Path) -> None:
    assert bytecode_cache_dir(tmp_path, {}, installed=False) == tmp_path / "pycache"
    assert bytecode_cache_dir(tmp_path, {}, installed=True) is None
    assert bytecode_cache_dir(tmp_path, {}, installed=None) is None  # nothing to judge by


@pytest.mark.unit
def test_on_off_and_the_users_own_prefix(tmp_path: Path) -> None:
    on = {"MINIFAL_BYTECODE_CACHE": "on"}
    assert bytecode_cache_dir(tmp_path, on, installed=True) == tmp_path / "pycache"
    assert bytecode_cache_dir(tmp_path, {"MINIFAL_BYTECODE_CACHE": "off"}, False) is None
    mine = {**on, "PYTHONPYCACHEPREFIX": "/somewhere/else"}
    assert bytecode_cache_dir(tmp_path, mine, installed=False) is None
    # an unknown value is auto, with a warning
    assert bytecode_cache_dir(tmp_path, {"MINIFAL_BYTECODE_CACHE": "yes"}, False) is not None


@pytest.mark.unit
def test_a_childs_environment_writes_bytecode_even_where_the_image_said_not_to(
    tmp_path: Path,
) -> None:
    env = {"PYTHONDONTWRITEBYTECODE": "1", "MINIFAL_BYTECODE_CACHE": "on"}
    cache_dir = configure_environment(env, tmp_path)
    assert cache_dir == tmp_path / "pycache" and cache_dir.is_dir()
    assert env == {"MINIFAL_BYTECODE_CACHE": "on", "PYTHONPYCACHEPREFIX": str(cache_dir)}


@pytest.mark.unit
def test_this_environment_is_judged_by_a_real_package() -> None:
    # pip wrote bytecode for the test venv's packages: auto leaves it alone
    assert bytecode_installed(("pydantic",)) is True
    assert bytecode_installed(("no_such_package_here",)) is None


@pytest.mark.process
def test_a_runner_process_keeps_the_bytecode_of_its_imports_in_the_data_dir(
    tmp_path: Path,
) -> None:
    """A real interpreter, told not to write bytecode, as the GPU image is."""
    module_dir = tmp_path / "src"
    module_dir.mkdir()
    (module_dir / "heavy_module.py").write_text("VALUE = 42\n")
    script = (
        "import json, sys; from pathlib import Path;"
        "from minifal.compiled.bytecode_cache import enable_bytecode_cache;"
        f"d = enable_bytecode_cache(Path({str(tmp_path / 'data')!r}));"
        "import heavy_module;"
        "print(json.dumps([str(d), sys.pycache_prefix, sys.dont_write_bytecode]))"
    )
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "MINIFAL_BYTECODE_CACHE": "on",
        "PYTHONPATH": os.pathsep.join([str(module_dir), *sys.path]),
    }
    env.pop("PYTHONPYCACHEPREFIX", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    cache_dir, prefix, dont_write = json.loads(out.stdout)
    assert cache_dir == prefix == str(tmp_path / "data" / "pycache")
    assert dont_write is False
    written = list(Path(cache_dir).rglob("heavy_module.*.pyc"))
    assert len(written) == 1
    assert not (module_dir / "__pycache__").exists()  # the source tree stays untouched
