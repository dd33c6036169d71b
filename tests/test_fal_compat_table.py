"""The compatibility table stays true: every public name of fal's installed SDK has a row, every
row's name exists in minifal, and docs/fal-compatibility.md is what the rows give.

It reads fal's package from the reference venv (./.venv-fal, made by scripts/setup-env.sh, as
CI does); without that venv it is skipped, saying so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "fal_compat_table.py"


@pytest.fixture(scope="module")
def table_script() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import fal_compat_table
    finally:
        sys.path.remove(str(SCRIPT.parent))
    if fal_compat_table.reference_python() is None:
        pytest.skip("no reference fal venv (.venv-fal): run scripts/setup-env.sh")
    return fal_compat_table


@pytest.mark.process
def test_the_table_covers_the_submodules_fal_installs(table_script: ModuleType) -> None:
    listed = table_script.read_fal_names(table_script.reference_python())["modules"]

    for module in (
        "fal",
        "fal.container",
        "fal.distributed.worker",
        "fal.distributed.utils",
        "fal.exceptions.auth",
        "fal.exceptions.gpu",
        "fal.toolkit.image.image",
        "fal.toolkit.utils.download_utils",
    ):
        assert module in listed, module
    assert "DistributedRunner" in listed["fal.distributed.worker"]
    assert "KeepAliveTimer" in listed["fal.distributed.utils"]
    # Private modules (fal.exceptions._base) and fal's own other packages stay out.
    assert not [m for m in listed if "._" in m or m.startswith(("fal.api", "fal.cli"))]


@pytest.mark.process
def test_every_fal_name_has_a_row_and_exists_in_minifal(table_script: ModuleType) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )

    assert done.returncode == 0, "fal compatibility table:\n" + done.stdout + done.stderr


@pytest.mark.unit
def test_rows_name_their_meaning() -> None:
    from minifal.compat.fal_compat import EXTRA_NAMES, ROWS

    for row in (*ROWS, *EXTRA_NAMES):
        assert row.status in ("implemented", "accepted", "not applicable"), row
        assert row.meaning.strip(), row
        assert all(module.split(".")[0] == "fal" for module in row.modules), row
