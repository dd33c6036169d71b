"""``fal.container.ContainerImage``: accepted and recorded as fal does; minifal says it runs the
app in the current environment; ``minifal dockerfile`` writes the image's Dockerfile plus minifal.

There is no Docker engine here: the generated Dockerfile is checked as text and linted with
hadolint (as scripts/test.sh lints the repository's Dockerfile), not built.
"""

from __future__ import annotations

import copy
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import clean_env, minifal_command, run_minifal
from fleet_support import start_fleet

import minifal as fal
from minifal import container
from minifal.compat.app_environment import describe_image, environment_summary
from minifal.compat.dockerfile_text import declared_args, final_base_image, with_build_args
from minifal.compat.ignore_patterns import IgnoreRules, pattern_to_regex
from minifal.container import ContainerImage, DockerfileParser, DockerignoreHandler

APPS_FAL_DIR = Path(__file__).parent / "apps_fal"
CONTAINER_APP = APPS_FAL_DIR / "container_app.py"
HADOLINT = Path(sys.executable).parent / "hadolint"

# fal 1.83's fal/container.py: every public name it defines.
FAL_CONTAINER_NAMES = {
    "BUILDERS",
    "Builder",
    "CommandOverride",
    "ContainerImage",
    "DEFAULT_COMPRESSION",
    "DEFAULT_DOCKERIGNORE_PATTERNS",
    "DEFAULT_FORCE_COMPRESSION",
    "DockerfileParser",
    "DockerignoreHandler",
}

DOCKERFILE = """\
ARG PYTHON_VERSION=3.10
FROM python:${PYTHON_VERSION}-slim AS base
ARG EXTRA
COPY requirements.txt /app/
COPY --from=base /x /y
ADD https://example.com/a.tgz /tmp/
ADD ["src/", "/app/src/"]
COPY --chown=1000:0 weights/*.bin \\
     /app/weights/
"""


# -- fal.container --------------------------------------------------------------------------------


@pytest.mark.unit
def test_fal_container_has_fal_public_names() -> None:
    assert set(dir(container)) >= FAL_CONTAINER_NAMES
    assert fal.container is container
    assert fal.ContainerImage is container.ContainerImage


@pytest.mark.unit
def test_from_dockerfile_str_records_the_image(tmp_path: Path) -> None:
    image = ContainerImage.from_dockerfile_str(
        DOCKERFILE,
        build_args={"PYTHON_VERSION": "3.11"},
        registries={"https://my.registry.io/": {"username": "me", "password": "s3cret"}},
        secrets={"TOKEN": "t0ken"},
        context_dir=tmp_path,
    )
    assert image.dockerfile_str == DOCKERFILE
    assert image.build_args == {"PYTHON_VERSION": "3.11"}
    assert image.compression == "gzip" and image.force_compression is False
    assert image.get_copy_add_sources() == ["requirements.txt", "src/", "weights/*.bin"]
    wire = image.to_dict()
    assert wire["docker_context_dir"] == str(tmp_path)
    assert wire["build_args"] == {"PYTHON_VERSION": "3.11"}
    assert "s3cret" not in repr(image) and "t0ken" not in repr(image)
    restored = pickle.loads(pickle.dumps(image))
    assert restored.registries == {} and restored.secrets == {}
    assert copy.deepcopy(image).secrets == {"TOKEN": "t0ken"}


@pytest.mark.unit
def test_from_dockerfile_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM python:3.11\n")
    assert ContainerImage.from_dockerfile(path).dockerfile_str == "FROM python:3.11\n"
    assert ContainerImage.from_dockerfile(str(path), build_args={"A": "1"}).build_args == {"A": "1"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dockerfile_str": "  "}, "Dockerfile is required"),
        ({"registries": {"r": {"username": "u"}}}, "Username and password"),
        ({"builder": "kaniko"}, "Invalid builder"),
        ({"cmd": 3}, "cmd must be a string or list of strings"),
        ({"use_isolate": "yes"}, "use_isolate must be a bool"),
    ],
)
def test_bad_images_fail_as_on_fal(kwargs: dict, message: str) -> None:
    arguments = {"dockerfile_str": "FROM python:3.11", **kwargs}
    with pytest.raises(ValueError, match=message):
        ContainerImage(**arguments)


@pytest.mark.unit
def test_dockerignore_priority(tmp_path: Path) -> None:
    assert DockerignoreHandler(context_dir=tmp_path).get_patterns() == (
        container.DEFAULT_DOCKERIGNORE_PATTERNS
    )
    (tmp_path / ".dockerignore").write_text("# comment\n\ndata/\n*.ckpt\n")
    assert DockerignoreHandler(context_dir=tmp_path).get_patterns() == ["data/", "*.ckpt"]
    assert DockerignoreHandler(context_dir=tmp_path, dockerignore=["x"]).get_patterns() == ["x"]
    with pytest.raises(FileNotFoundError):
        DockerignoreHandler(dockerignore_path=tmp_path / "missing").get_patterns()
    image = ContainerImage.from_dockerfile_str("FROM x", context_dir=tmp_path)
    assert any(re.match(regex, "a/b.ckpt") for regex in image.to_dict()["docker_ignore"])
    image.add_dockerignore(patterns=["only-this"])
    assert image.to_dict()["docker_ignore"] == [pattern_to_regex("only-this")[0]]


@pytest.mark.unit
def test_ignore_patterns_follow_git() -> None:
    rules = IgnoreRules(["*.md", "build/", "/top", "a/**/z", "!keep.md"])
    assert rules.ignores("README.md") and rules.ignores("docs/x.md")
    assert not rules.ignores("keep.md")
    assert rules.ignores("build/out.o") and not rules.ignores("build")
    assert rules.ignores("top") and not rules.ignores("sub/top")
    assert rules.ignores("a/z") and rules.ignores("a/b/c/z")
    assert pattern_to_regex("# comment") == (None, None)


@pytest.mark.unit
def test_dockerfile_parser_shell_and_json_forms() -> None:
    parser = DockerfileParser('COPY ["a b.txt", "c", "/dst/"]\nCOPY /abs/x ./\n')
    assert parser.parse_copy_add_sources() == ["a b.txt", "c", "abs/x"]


# -- an App with an image: kind, what is reported -------------------------------------------------


@pytest.mark.unit
def test_an_image_makes_a_container_app() -> None:
    class WithImage(fal.App):
        image = ContainerImage.from_dockerfile_str("FROM python:3.11-slim")

    settings = WithImage.settings()
    assert settings.kind == "container"
    assert settings.image is WithImage.image
    summary = environment_summary(settings.kind, settings.image)
    assert summary["runs_in"] == "current environment"
    assert summary["executable"] == sys.executable
    assert summary["image"]["base_image"] == "python:3.11-slim"


@pytest.mark.unit
def test_image_description_keeps_no_credentials() -> None:
    image = ContainerImage.from_dockerfile_str(
        "FROM python:3.11", registries={"reg": {"username": "u", "password": "pw"}}
    )
    description = describe_image(image)
    assert description is not None
    assert description["registries"] == ["reg"]
    assert "pw" not in str(description)


@pytest.mark.unit
def test_dockerfile_text_helpers() -> None:
    assert declared_args(DOCKERFILE) == ["PYTHON_VERSION", "EXTRA"]
    rewritten = with_build_args(DOCKERFILE, {"PYTHON_VERSION": "3.12", "EXTRA": "a b"})
    assert "ARG PYTHON_VERSION=3.12" in rewritten
    assert 'ARG EXTRA="a b"' in rewritten
    assert final_base_image(DOCKERFILE) == "python:3.10-slim"
    assert final_base_image(DOCKERFILE + "FROM base\n", {"PYTHON_VERSION": "3.12"}) == (
        "python:3.12-slim"
    )


# -- minifal dockerfile ---------------------------------------------------------------------------


@pytest.mark.process
def test_minifal_dockerfile_writes_the_image_plus_minifal(tmp_path: Path) -> None:
    shutil.copy(CONTAINER_APP, tmp_path / CONTAINER_APP.name)
    result = run_minifal("dockerfile", CONTAINER_APP.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    dockerfile = tmp_path / "Dockerfile.minifal"
    text = dockerfile.read_text()

    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    # The app's own Dockerfile first, its build args baked in as ARG defaults.
    assert lines[:4] == [
        "ARG PYTHON_VERSION=3.11",
        "FROM python:${PYTHON_VERSION}-slim",
        "ARG PYJOKES_VERSION=0.8.3",
        'RUN pip install --no-cache-dir "pyjokes==${PYJOKES_VERSION}"',
    ]
    assert "COPY .minifal-build/ /opt/minifal/" in lines
    install = next(line for line in lines if line.startswith("RUN python3 -m pip install"))
    assert re.search(r'"fastapi==[\w.]+"', install) and '"pyjokes"' in install
    assert lines[-1] == (
        'CMD ["python3", "-m", "minifal.cli", "run", "/opt/minifal/app/container_app.py::Test",'
        ' "--host", "0.0.0.0", "--port", "8080"]'
    )
    build_dir = tmp_path / ".minifal-build"
    assert (build_dir / "minifal" / "cli" / "main.py").is_file()
    assert not list(build_dir.rglob("__pycache__"))
    assert (build_dir / "app" / "container_app.py").read_text() == CONTAINER_APP.read_text()
    assert "docker build -f" in result.stdout

    lint = subprocess.run(
        [str(HADOLINT), str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.process
def test_minifal_dockerfile_to_another_path(tmp_path: Path) -> None:
    shutil.copy(CONTAINER_APP, tmp_path / CONTAINER_APP.name)
    out = tmp_path / "out" / "Dockerfile"
    result = run_minifal("dockerfile", f"{CONTAINER_APP.name}::Test", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"docker build -f {out} -t test {tmp_path}" in result.stdout


@pytest.mark.process
def test_minifal_dockerfile_needs_an_image(tmp_path: Path) -> None:
    app = Path(__file__).parent / "apps" / "echo_app.py"
    result = run_minifal("dockerfile", str(app), cwd=tmp_path)
    assert result.returncode == 2
    assert "declares no ContainerImage" in result.stderr


# -- the example app under minifal run ------------------------------------------------------------


@pytest.mark.process
def test_container_app_runs_in_the_current_environment(tmp_path: Path) -> None:
    with start_fleet(CONTAINER_APP, tmp_path, workers=1) as fleet, fleet.client() as client:
        openapi = client.get("/openapi.json").json()
        assert "/" in openapi["paths"]
        assert "Input" in openapi["components"]["schemas"]

        answer = client.post("/", json={"text": "hello"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"text": "HELLO!", "joke": None, "gpu_visible": False}
        assert client.post("/", json={}).status_code == 422

        table = client.get("/runners").json()
        environment = table["environment"]
        assert environment["runs_in"] == "current environment"
        assert environment["kind"] == "container"
        assert environment["image"]["base_image"] == "python:3.11-slim"
        assert environment["image"]["build_args"] == {
            "PYTHON_VERSION": "3.11",
            "PYJOKES_VERSION": "0.8.3",
        }

        shown = subprocess.run(
            minifal_command("runners", "--url", fleet.base_url),
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "declares a container image (FROM python:3.11-slim" in shown.stdout
        assert "runs it in the current environment" in shown.stdout

        runner_log = next((fleet.data_dir / "runs").rglob("runner-0.log")).read_text()
        assert "minifal runs it in the current environment" in runner_log
        assert httpx.get(fleet.url("/health"), timeout=10).status_code == 200
