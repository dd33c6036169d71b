"""``[tool.fal.apps]`` in a pyproject.toml: ``minifal run NAME`` resolves fal's app names, ``ref``
and ``python_entry_point``, searching from the current directory up as fal's CLI does. The
fixture project (tests/apps_fal/project) also declares billing, checked in the gateway's /metrics.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import clean_env
from fleet_support import start_fleet
from prometheus_client.parser import text_string_to_metric_families

import minifal as fal
from minifal.compat.project import (
    ProjectError,
    find_project_root,
    find_pyproject_toml,
    is_app_name,
    load_project_app,
)
from minifal.container import ContainerImage
from minifal.runner.app_loader import AppLoadError, load_app_class

PROJECT_FIXTURE = Path(__file__).parent / "apps_fal" / "project"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the fixture project (outside any git checkout)."""
    root = tmp_path / "project"
    shutil.copytree(PROJECT_FIXTURE, root)
    return root


def write_project(root: Path, apps: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(apps))
    return root


# -- finding the project and its apps -------------------------------------------------------------


@pytest.mark.unit
def test_app_names_are_what_fal_calls_app_names() -> None:
    assert is_app_name("my-app")
    assert not is_app_name("app.py")
    assert not is_app_name("path/app.py::App")
    assert not is_app_name("src/thing::App")


@pytest.mark.unit
def test_project_root_is_searched_from_the_current_dir_up(project: Path) -> None:
    deep = project / "src" / "a" / "b"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == project
    assert find_pyproject_toml(deep) == project / "pyproject.toml"


@pytest.mark.unit
def test_a_git_checkout_stops_the_search(tmp_path: Path) -> None:
    write_project(tmp_path, '[tool.fal.apps.x]\nref = "a.py"\n')
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    assert find_project_root(tmp_path / "repo") == tmp_path / "repo"
    assert find_pyproject_toml(tmp_path / "repo") is None


@pytest.mark.unit
def test_a_pyproject_without_tool_fal_is_passed_over(tmp_path: Path) -> None:
    write_project(tmp_path, '[tool.fal.apps.x]\nref = "a.py"\n')
    write_project(tmp_path / "inner", '[project]\nname = "inner"\n')
    assert find_project_root(tmp_path / "inner") == tmp_path


@pytest.mark.unit
def test_ref_is_relative_to_the_project_root(project: Path) -> None:
    app = load_project_app("priced-echo", project / "src")
    assert app.ref == f"{project}/src/priced_app.py::PricedEcho"
    assert app.settings["app_name"] == "priced-echo"
    assert app.settings["keep_alive"] == 45
    assert app.settings["app_auth"] == "public"
    assert app.platform_only == {"team": "my-team"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('ref = "a.py"\npython_entry_point = "m:A"', "cannot have both"),
        ("keep_alive = 3", "does not have a ref key"),
        ('python_entry_point = "no_colon"', "'<module>:<symbol>' format"),
        ('ref = "a.py"\nfavourite_colour = "red"', "unexpected keys"),
        ('ref = "a.py"\nimage = {image = "x", dockerfile = "D"}', "exactly one of"),
        ('ref = "a.py"\nimage = {dockerfile = "missing"}', "image.dockerfile not found"),
    ],
)
def test_bad_tables_fail_with_fal_messages(tmp_path: Path, table: str, message: str) -> None:
    write_project(tmp_path, f"[tool.fal.apps.x]\n{table}\n")
    with pytest.raises(ProjectError, match=message):
        load_project_app("x", tmp_path)


@pytest.mark.unit
def test_unknown_app_and_missing_project(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    with pytest.raises(ProjectError, match=r"no pyproject\.toml"):
        load_project_app("x", tmp_path)
    write_project(tmp_path, '[tool.fal.apps.known]\nref = "a.py"\n')
    with pytest.raises(ProjectError, match=r"App other not found .* \(apps: known\)"):
        load_project_app("other", tmp_path)


@pytest.mark.unit
def test_image_table_is_a_container_image(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        """
        [tool.fal.apps.c]
        ref = "a.py"
        image = { dockerfile = "docker/Dockerfile", build_args = { V = "1" } }

        [tool.fal.apps.r]
        ref = "a.py"
        image = { image = "ghcr.io/me/base:2" }
        """,
    )
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("ARG V\nFROM python:3.11\n")
    image = load_project_app("c", tmp_path).settings["image"]
    assert isinstance(image, ContainerImage)
    assert image.build_args == {"V": "1"}
    assert Path(image.context_dir) == tmp_path
    reference = load_project_app("r", tmp_path).settings["image"]
    assert reference.dockerfile_str == "FROM ghcr.io/me/base:2\n"


# -- loading: the table's settings on the class ---------------------------------------------------


@pytest.mark.unit
def test_loaded_app_gets_the_table_settings(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "src")
    app_class = load_app_class("priced-echo")
    settings = app_class.settings()
    assert app_class.__name__ == "PricedEcho"
    assert app_class.resolved_app_name() == "priced-echo"  # the table's name wins
    assert settings.keep_alive == 45  # the class left fal's default
    assert settings.max_concurrency == 1  # the class sets it: the class wins
    assert settings.request_start_timeout == 20
    assert settings.app_auth == "public"
    assert app_class.get_billing_components()["/"]["schema_id"] == "priced-echo/characters/v1"


@pytest.mark.unit
def test_python_entry_point(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    app_class = load_app_class("echo-entry")
    assert app_class.__name__ == "EntryEcho"
    assert app_class.resolved_app_name() == "entry-echo-public"
    assert app_class.settings().machine_type == "M"


@pytest.mark.unit
def test_bad_setting_value_names_the_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, '[tool.fal.apps.x]\nref = "a.py"\nkeep_alive = -1\n')
    (tmp_path / "a.py").write_text("import minifal as fal\n\nclass A(fal.App):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(fal.AppSettingsError, match=r"A\.keep_alive"):
        load_app_class("x")
    with pytest.raises(AppLoadError, match="not found"):
        load_app_class("y")


@pytest.mark.process
def test_manifest_child_resolves_from_a_subdirectory(project: Path) -> None:
    """The gateway inspects apps in a child process; it finds the project the same way."""
    completed = subprocess.run(
        [sys.executable, "-m", "minifal.runner.app_manifest", "priced-echo"],
        cwd=project / "src",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    manifest = json.loads(completed.stdout.strip().splitlines()[-1])
    assert manifest["app_name"] == "priced-echo"
    assert manifest["settings"]["keep_alive"] == 45
    assert list(manifest["billing_components"]) == ["/"]


# -- minifal run NAME, billing in /metrics --------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@pytest.mark.process
def test_minifal_run_by_app_name_with_billing_metrics(project: Path) -> None:
    with start_fleet("priced-echo", project, workers=1) as fleet, fleet.client() as client:
        runners = client.get("/runners").json()
        assert runners["app"] == "priced-echo"
        assert runners["runners"][0]["alias"] == "priced-echo"

        answer = client.post("/local/priced-echo/", json={"text": "hello"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-fal-billable-units"] == "5"
        queued = client.post("/queue/local/priced-echo/", json={"text": "abc"}).json()
        assert client.get(queued["response_url"] + "/status/stream").status_code == 200
        assert client.post("/free", json={"text": "x"}).status_code == 200
        assert client.post("/", json={}).status_code == 422

        metrics = client.get("/metrics").text
        assert _metric(metrics, "minifal_billable_units_total", endpoint="/") == 8.0
        assert (
            _metric(metrics, "minifal_billed_inference_seconds_total", endpoint="/free") or 0
        ) > 0
        info = {
            "endpoint": "/",
            "schema_id": "priced-echo/characters/v1",
            "version": "1",
            "component": "characters",
        }
        assert _metric(metrics, "minifal_billing_component_info", **info) == 1.0
    assert "[tool.fal.apps.priced-echo]: team apply on fal's platform only" in fleet.log()
