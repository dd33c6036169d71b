"""``import fal`` -> minifal, and never over a real fal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

# -- import fal --------------------------------------------------------------------------------


def _run_python(code: str, *, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A clean interpreter (``-I``-like: no user site), so ``sys.modules`` starts empty."""
    command = [sys.executable, "-s", "-c", textwrap.dedent(code)]
    env = {"PATH": "/usr/bin:/bin"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_fal_alias_maps_fal_to_minifal() -> None:
    result = _run_python(
        """
        import importlib.util
        assert importlib.util.find_spec("fal") is None, "the real fal is installed here"
        from minifal.compat.fal_alias import install_fal_alias
        assert install_fal_alias()
        assert install_fal_alias()  # idempotent
        import fal
        import fal.exceptions
        import minifal
        import minifal.exceptions
        from fal.exceptions import FieldException
        from fal.toolkit import Image
        import minifal.toolkit
        assert fal is minifal
        assert fal.App is minifal.App
        assert fal.endpoint is minifal.endpoint
        assert fal.exceptions.FieldException is minifal.exceptions.FieldException
        assert FieldException is minifal.exceptions.FieldException
        assert Image is minifal.toolkit.Image
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_fal_alias_never_shadows_a_real_fal(tmp_path: Path) -> None:
    real = tmp_path / "fal"
    real.mkdir()
    (real / "__init__.py").write_text("REAL = True\n")
    result = _run_python(
        """
        from minifal.compat.fal_alias import install_fal_alias, real_fal_installed
        assert real_fal_installed()
        assert install_fal_alias() is False
        import fal
        assert fal.REAL is True
        print("ok")
        """,
        extra_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_without_the_alias_fal_is_not_importable() -> None:
    result = _run_python("import minifal\nimport fal\n")
    assert result.returncode != 0
    assert "No module named 'fal'" in result.stderr


def test_fal_alias_answers_only_fals_own_module_paths() -> None:
    result = _run_python(
        """
        from minifal.compat.fal_alias import install_fal_alias
        assert install_fal_alias()
        import fal.sync, fal.project, fal.app, fal.container, fal.toolkit.compilation
        import minifal.compat.sync
        assert fal.sync is minifal.compat.sync
        for internal in ("fal.fleet", "fal.compiled", "fal.host", "fal.runner", "fal.cli"):
            try:
                __import__(internal)
            except ModuleNotFoundError as error:
                assert error.name == internal, error
            else:
                raise AssertionError(internal + " imported")
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
