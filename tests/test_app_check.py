"""``minifal check APP`` through the CLI: loads an app as the gateway does (no ``setup()``) and
tells minifal's gaps from the app's own missing dependencies and errors; exit code 0 or 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import clean_env

from minifal.compat.app_check import APP_ERROR, DEPENDENCY, GAP, classify, fal_import_gaps

pytestmark = pytest.mark.process

CONSOLE_SCRIPT = Path(sys.executable).parent / "minifal"
"""The installed ``minifal`` command: unlike ``python -m``, it does not put the working
directory on ``sys.path`` itself."""


def check(directory: Path, app: str) -> subprocess.CompletedProcess[str]:
    command = (
        [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "minifal.cli"]
    )
    return subprocess.run(
        [*command, "check", app],
        cwd=directory,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def test_an_app_that_loads_is_ok_and_its_setup_does_not_run(tmp_path: Path) -> None:
    write(
        tmp_path,
        "good_app.py",
        """
        from pathlib import Path

        import fal
        from fal.app import AppClient, AppClientError, wrap_app
        from fal.ref import get_current_app
        from pydantic import BaseModel


        class Out(BaseModel):
            text: str


        class Good(fal.App, keep_alive=30, _scheduler_options={"storage_region": "us-east"}):
            requirements = ["surely-not-an-installed-package-xyz==1.0"]

            def setup(self):
                Path("setup-ran").write_text("yes")

            @fal.endpoint("/")
            def run(self) -> Out:
                return Out(text="hi")

            @fal.realtime("/realtime")
            def live(self, text: Out) -> Out:
                return text
        """,
    )
    done = check(tmp_path, "good_app.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded: Good (app name good); routes: /, /realtime (realtime)" in done.stdout
    assert "nothing stops it on minifal" in done.stdout
    assert "note: requirement not installed here" in done.stdout
    assert "surely-not-an-installed-package-xyz" in done.stdout
    assert not (tmp_path / "setup-ran").exists()


def test_a_missing_dependency_is_the_apps_own(tmp_path: Path) -> None:
    write(
        tmp_path,
        "needs_dep.py",
        """
        import fal
        import surely_not_installed_module_xyz


        class NeedsDep(fal.App):
            pass
        """,
    )
    done = check(tmp_path, "needs_dep.py")
    assert done.returncode == 1
    assert "app dependency: No module named 'surely_not_installed_module_xyz'" in done.stdout
    assert "pip install surely_not_installed_module_xyz" in done.stdout
    assert "[needs_dep.py:3]" in done.stdout
    assert "minifal gap" not in done.stdout


def test_every_fal_name_minifal_lacks_is_a_gap(tmp_path: Path) -> None:
    write(
        tmp_path,
        "gaps.py",
        """
        import fal
        import fal.not_a_module_xyz
        from fal.toolkit import Image, NotANameXyz
        from fal.app import AppClient


        class Gaps(fal.App):
            pass
        """,
    )
    done = check(tmp_path, "gaps.py")
    assert done.returncode == 1
    assert "minifal gap: module fal.not_a_module_xyz is not in minifal  [gaps.py:3]" in done.stdout
    assert "minifal gap: fal.toolkit.NotANameXyz is not in minifal  [gaps.py:4]" in done.stdout
    assert "2 problem(s): minifal gap" in done.stdout
    assert "app dependency" not in done.stdout


def test_an_endpoint_type_without_a_schema_is_an_app_error(tmp_path: Path) -> None:
    write(
        tmp_path,
        "broken.py",
        """
        import fal


        class Broken(fal.App):
            @fal.endpoint("/")
            def broken(self) -> Exception:
                raise Exception("designed to fail")
        """,
    )
    done = check(tmp_path, "broken.py")
    assert done.returncode == 1
    assert "app error: FastAPIError" in done.stdout


def test_a_sibling_package_of_the_working_directory_imports(tmp_path: Path) -> None:
    """fal appends the working directory to sys.path; so does minifal's loader."""
    write(tmp_path, "shared_lib_xyz/__init__.py", "GREETING = 'hello'\n")
    write(
        tmp_path,
        "apps/uses_sibling.py",
        """
        import fal
        from shared_lib_xyz import GREETING


        class UsesSibling(fal.App):
            @fal.endpoint("/")
            def run(self) -> dict:
                return {"greeting": GREETING}
        """,
    )
    done = check(tmp_path, "apps/uses_sibling.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_classify_without_processes(tmp_path: Path) -> None:
    app_file = tmp_path / "app.py"
    assert classify(ModuleNotFoundError("x", name="fal.nope"), app_file).kind == GAP
    assert classify(ModuleNotFoundError("x", name="diffusers.models"), app_file).kind == DEPENDENCY
    assert classify(ImportError("cannot import name 'Z'", name="fal.toolkit"), app_file).kind == GAP
    assert classify(ValueError("bad"), app_file).kind == APP_ERROR
    assert fal_import_gaps("import os\nfrom fal.ref import get_current_app\n", "a.py") == []


def test_a_misspelt_setting_loads_and_the_check_says_which_setting_it_may_mean(
    tmp_path: Path,
) -> None:
    app = Path(__file__).parent / "apps" / "bad_setting_app.py"
    done = check(tmp_path, str(app))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note: TypoApp: class keyword 'keep_alvie' is not an App setting" in done.stdout
    assert "did you mean 'keep_alive'?" in done.stdout
