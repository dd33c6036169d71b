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


@pytest.mark.unit
def test_a_source_tree_is_listed_without_importing_it_and_compared(
    table_script: ModuleType, tmp_path: Path
) -> None:
    """--fal-source parses a tree: ``__all__`` when literal, else top-level names; a package's
    re-exports from its own submodules; private modules left out."""
    old, new = tmp_path / "old" / "fal", tmp_path / "new" / "fal"
    for root in (old, new):
        (root / "toolkit").mkdir(parents=True)
        (root / "_private.py").write_text("X = 1\n")
        (root / "app.py").write_text("import not_installed_anywhere\nclass App: ...\n")
    (old / "__init__.py").write_text("__all__ = ['App']\n")
    (new / "__init__.py").write_text("__all__ = ['App', 'ref']\n")
    (old / "toolkit" / "__init__.py").write_text("from .image import Image\n")
    (new / "toolkit" / "__init__.py").write_text("from .image import Image, Video\n")
    (new / "ref.py").write_text("def get_current_app(): ...\n_hidden = 1\n")

    listed = table_script.parsed_public_names(new)
    assert listed == {
        "fal": ["App", "ref"],
        "fal.app": ["App"],
        "fal.ref": ["get_current_app"],
        "fal.toolkit": ["Image", "Video"],
    }
    diff = table_script.compare_names(table_script.parsed_public_names(old), listed)
    assert diff == {
        "modules_added": {"fal.ref": ["get_current_app"]},
        "modules_removed": [],
        "names_added": {"fal": ["ref"], "fal.toolkit": ["Video"]},
        "names_removed": {},
    }
    text = "\n".join(
        table_script.render_source_diff({"release": "1.0", "source": "main (x)", **diff})
    )
    assert "| module `fal.ref` | yes |" in text  # minifal has fal.ref
    assert "| `fal.toolkit.Video` | yes |" in text
    assert "| `fal.ref.get_current_app` | yes |" in text


@pytest.mark.unit
def test_every_ported_test_the_doc_names_exists() -> None:
    """docs/fal-ported-tests.md (rendered into the compatibility doc) names real tests."""
    import ast
    import re

    table = (ROOT / "docs" / "fal-ported-tests.md").read_text()
    defined = set()
    for name in ("test_fal_e2e_apps.py", "test_fal_app_module.py"):
        tree = ast.parse((ROOT / "tests" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                defined.add(node.name)
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `test_")]
    assert len(rows) >= 50
    for row in rows:
        for named in re.findall(r"`([^`]+)`", row[2]):
            for part in re.sub(r"\[.*\]$", "", named).split("::"):
                assert part in defined, named
