"""fal's top-level names with their local meaning: ``fal.__all__``, ``wrap_app``,
``fal.exceptions``, ``fal.function``, ``cached``, ``sync_dir``, credentials and billing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import clean_env, free_port
from fleet_support import poll_until
from prometheus_client.parser import text_string_to_metric_families

import minifal as fal
from minifal import exceptions
from minifal.billing import check_declaration, check_endpoint_billing, parse_billable_units
from minifal.compat.functions import LocalFunction
from minifal.fleet.metrics import GatewayMetrics
from minifal.runner.app_loader import AppLoadError, load_app_class

# fal 1.83: `python -c "import fal; print(fal.__all__)"`.
FAL_ALL = [
    "function",
    "cached",
    "App",
    "endpoint",
    "realtime",
    "HealthCheck",
    "BillingComponents",
    "BillingDeclaration",
    "FalServerlessKeyCredentials",
    "sync_dir",
    "__version__",
    "version_tuple",
    "ContainerImage",
]
# fal 1.83: fal.exceptions.__all__.
FAL_EXCEPTIONS_ALL = [
    "FalServerlessException",
    "AppException",
    "FieldException",
    "RequestCancelledException",
    "FileTooLargeError",
    "AppFileUploadException",
    "GPUException",
    "GPUOutOfMemoryException",
    "CUDAOutOfMemoryException",
    "UnauthenticatedException",
    "catch_gpu_exceptions",
]


def run_python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_every_name_of_fal_all_is_here() -> None:
    missing = [name for name in FAL_ALL if not hasattr(fal, name)]
    assert missing == []
    assert set(FAL_ALL) <= set(fal.__all__) | {"__version__"}
    assert fal.version_tuple[:3] == tuple(int(part) for part in fal.__version__.split(".")[:3])


@pytest.mark.process
def test_fal_names_through_the_alias() -> None:
    """In an app file, ``import fal`` gives all of them, and the submodules apps import."""
    result = run_python(
        f"""
        from minifal.compat.fal_alias import install_fal_alias
        assert install_fal_alias()
        import fal, minifal
        for name in {FAL_ALL!r} + ["wrap_app", "isolated"]:
            assert getattr(fal, name) is getattr(minifal, name), name
        import fal.exceptions._base, fal.exceptions.auth, fal.exceptions.gpu
        from fal.exceptions import {", ".join(FAL_EXCEPTIONS_ALL)}
        from fal.container import ContainerImage, DockerfileParser, DockerignoreHandler
        from fal.sync import sync_dir
        from fal.project import find_project_root
        assert fal.container.ContainerImage is ContainerImage is fal.ContainerImage
        assert fal.distributed.__name__ == "minifal.distributed"
        assert fal.toolkit.__name__ == "minifal.toolkit"
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- fal.exceptions -------------------------------------------------------------------------------


@pytest.mark.unit
def test_fal_exceptions_names_and_shapes() -> None:
    assert sorted(exceptions.__all__) == sorted(FAL_EXCEPTIONS_ALL)
    field = exceptions.FieldException("prompt", "must not be empty")
    assert (field.field, field.message, field.status_code, field.type) == (
        "prompt",
        "must not be empty",
        422,
        "value_error",
    )
    assert field.billable_units == 0
    assert field.to_pydantic_format() == {
        "detail": [{"loc": ["body", "prompt"], "msg": "must not be empty", "type": "value_error"}]
    }
    app_error = exceptions.AppException(message="quota", status_code=429)
    assert str(app_error) == "quota" and app_error.status_code == 429
    assert exceptions.AppException("x").status_code == 500  # minifal's default; fal needs it
    assert exceptions.RequestCancelledException().message == "Request cancelled by the client."
    upload = exceptions.AppFileUploadException("failed", "weights/a.bin")
    assert upload.relative_path == "weights/a.bin"
    assert "fal auth login" in str(exceptions.UnauthenticatedException())
    for name in FAL_EXCEPTIONS_ALL[:-1]:
        assert issubclass(getattr(exceptions, name), exceptions.FalServerlessException), name
    assert {field, app_error}  # hashable, as exceptions usually are


@pytest.mark.unit
def test_gpu_exceptions_are_app_exceptions_with_503() -> None:
    oom = exceptions.CUDAOutOfMemoryException()
    assert isinstance(oom, exceptions.GPUOutOfMemoryException)
    assert isinstance(oom, exceptions.GPUException)
    assert isinstance(oom, exceptions.AppException)
    assert (oom.message, oom.status_code) == ("CUDA error: out of memory", 503)
    assert dataclasses.is_dataclass(oom)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "CUDAOutOfMemoryException"),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED."), "CUDAOutOfMemoryException"),
        (ValueError("NCCL error: unhandled system error"), "GPUException"),
        (KeyError("plain"), "KeyError"),
    ],
)
def test_catch_gpu_exceptions(raised: Exception, expected: str) -> None:
    @exceptions.catch_gpu_exceptions()
    def inference() -> None:
        raise raised

    with pytest.raises(Exception) as caught:
        inference()
    assert type(caught.value).__name__ == expected
    if expected != type(raised).__name__:
        assert caught.value.__cause__ is raised


# -- fal.function, cached -------------------------------------------------------------------------


@pytest.mark.unit
def test_function_runs_here_and_records_its_options() -> None:
    @fal.function("virtualenv", requirements=["numpy"], machine_type="GPU-H100")
    def add(a: int, b: int) -> int:
        return a + b

    assert isinstance(add, LocalFunction)
    assert add(2, 3) == 5
    assert add.run_local(1, 1) == 2
    assert add.submit(4, 5).result(timeout=30) == 9
    assert add.options["machine_type"] == "GPU-H100"
    assert add.options["requirements"] == ["numpy"]
    on_cpu = add.on(machine_type="S")
    assert on_cpu.options["machine_type"] == "S" and add.options["machine_type"] == "GPU-H100"
    assert add.__name__ == "add"


@pytest.mark.unit
def test_function_coroutines_bare_use_and_fal_checks() -> None:
    @fal.function
    async def greet(name: str) -> str:
        await asyncio.sleep(0)
        return f"hi {name}"

    assert greet("you") == "hi you"
    container = fal.function(image=fal.ContainerImage.from_dockerfile_str("FROM python:3.11"))
    assert container(lambda: 1).options["kind"] == "container"
    with pytest.raises(ValueError, match="requirements must be a list"):
        fal.function(requirements="numpy")
    with pytest.raises(ValueError, match="app_files is not supported for container apps"):
        fal.function("container", app_files=["a"])
    with pytest.raises(ValueError, match="local_python_modules"):
        fal.function(local_python_modules="helpers")


@pytest.mark.unit
def test_cached_computes_once_per_process_and_arguments() -> None:
    calls: list[int] = []

    @fal.cached
    def load(size: int) -> list[int]:
        calls.append(size)
        return [0] * size

    assert load(3) is load(3)
    load(4)
    assert calls == [3, 4]
    sourceless = eval("lambda: 1")
    assert fal.cached(sourceless) is sourceless


# -- sync_dir -------------------------------------------------------------------------------------


@pytest.mark.unit
def test_sync_dir_copies_into_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("MINIFAL_DATA_DIR", str(data))
    source = tmp_path / "weights"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.bin").write_bytes(b"\x00\x01")
    (source / "skip.log").write_text("noise")
    (source / ".gitignore").write_text("*.log\n")

    assert fal.sync_dir(source, "/data/models/weights") == "models/weights"
    target = data / "models" / "weights"
    assert (target / "a.txt").read_text() == "a"
    assert (target / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    assert not (target / "skip.log").exists()
    assert (target / ".fal_hash").is_file()
    assert not (source / ".fal_hash").exists()  # the local directory is left as it was

    fal.sync_dir(source, "/data/models/weights")
    assert "already uploaded" in capsys.readouterr().out
    (source / "a.txt").write_text("changed")
    (target / "stale").write_text("gone after the next sync")
    fal.sync_dir(source, "/data/models/weights", force_upload=True)
    assert (target / "a.txt").read_text() == "changed"
    assert not (target / "stale").exists()


@pytest.mark.unit
@pytest.mark.parametrize("remote", ["models/x", "/tmp/x", "/data", "/data/../etc"])
def test_sync_dir_remote_must_be_inside_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: str
) -> None:
    monkeypatch.setenv("MINIFAL_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ValueError, match="/data"):
        fal.sync_dir(tmp_path, remote)


# -- credentials, billing -------------------------------------------------------------------------


@pytest.mark.unit
def test_key_credentials() -> None:
    credentials = fal.FalServerlessKeyCredentials("key-id", "key-secret")
    assert credentials.to_headers() == {"Authorization": "Key key-id:key-secret"}
    assert "key-secret" not in repr(credentials)


class Declaration:
    def declaration(self) -> fal.BillingComponents:
        return {"version": 1, "schema_id": "s", "app": {"type": "object", "properties": {}}}


@pytest.mark.unit
def test_billing_declarations_are_checked_as_on_fal() -> None:
    assert isinstance(Declaration(), fal.BillingDeclaration)
    assert check_endpoint_billing(None, is_websocket=False) is None
    with pytest.raises(TypeError, match="declaration\\(\\) method"):
        check_endpoint_billing(Declaration, is_websocket=False)
    with pytest.raises(ValueError, match="Websocket endpoints"):
        check_endpoint_billing(Declaration(), is_websocket=True)
    good = Declaration().declaration()
    assert check_declaration("/", good) is good
    for bad, reason in [
        ([], "must be a dict"),
        ({**good, "extra": 1}, "exactly version"),
        ({**good, "version": True}, "version 1"),
        ({**good, "schema_id": ""}, "schema_id"),
        ({**good, "app": {"type": "array"}}, "object JSON Schema"),
        ({**good, "app": {"type": "object", "x": float("nan")}}, "NaN"),
        ({**good, "app": {"type": "object", "x": (1, 2)}}, "round trip"),
    ]:
        with pytest.raises(ValueError, match=reason):
            check_declaration("/", bad)


@pytest.mark.unit
def test_billing_metrics() -> None:
    declarations = {
        "/": {
            "version": 1,
            "schema_id": "per-image",
            "app": {"type": "object", "properties": {"images": {}, "megapixels": {}}},
        }
    }
    metrics = GatewayMetrics(lambda: [], lambda: 0, declarations)
    metrics.answered("/", 200, {"x-fal-billable-units": "2.5"}, 1.0)
    metrics.answered("/", 200, {"x-fal-billable-units": "1"}, 1.0)
    metrics.answered("/slow", 200, {}, 0.75)
    metrics.answered("/", 500, {"x-fal-billable-units": "9"}, 1.0)  # 5xx: never billed
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }
    assert samples[("minifal_billable_units_total", (("endpoint", "/"),))] == 3.5
    assert samples[("minifal_billed_inference_seconds_total", (("endpoint", "/slow"),))] == 0.75
    components = sorted(
        dict(labels)["component"]
        for name, labels in samples
        if name == "minifal_billing_component_info"
    )
    assert components == ["images", "megapixels"]
    assert parse_billable_units("abc") is None and parse_billable_units("-1") is None


# -- wrap_app under `if __name__ == "__main__"` ---------------------------------------------------


WRAPPED_APP = """\
import minifal as fal
from pydantic import BaseModel


class Number(BaseModel):
    x: int


class Doubled(BaseModel):
    y: int


class Doubler(fal.App):
    def setup(self):
        self.factor = 2

    @fal.endpoint("/")
    def double(self, number: Number) -> Doubled:
        return Doubled(y=number.x * self.factor)


if __name__ == "__main__":
    app = fal.wrap_app(Doubler)
    app()
"""


@pytest.fixture
def wrapped_app(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``python app.py`` with its port in ``$MINIFAL_PORT``; stopped with SIGTERM."""
    (tmp_path / "app.py").write_text(WRAPPED_APP)
    port = free_port()
    log_path = tmp_path / "app.log"
    env = clean_env() | {"MINIFAL_PORT": str(port), "MINIFAL_DATA_DIR": str(tmp_path / "data")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.process
def test_wrap_app_serves_like_minifal_serve(
    wrapped_app: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, base_url, log_path = wrapped_app

    def ready() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    poll_until(ready, 60, "python app.py to serve")
    assert httpx.post(f"{base_url}/", json={"x": 21}, timeout=10).json() == {"y": 42}
    assert httpx.post(f"{base_url}/", json={"x": "a"}, timeout=10).status_code == 422
    assert "/" in httpx.get(f"{base_url}/openapi.json", timeout=10).json()["paths"]
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(30) == 0, log_path.read_text()


@pytest.mark.unit
def test_wrap_app_takes_apps_only() -> None:
    with pytest.raises(TypeError, match=r"fal\.App subclass"):
        fal.wrap_app(object)  # type: ignore[arg-type]

    class Nested(fal.App):
        pass

    with pytest.raises(TypeError, match="top level"):
        fal.wrap_app(Nested)


@pytest.mark.unit
def test_a_wrapped_app_or_a_function_by_name(tmp_path: Path) -> None:
    """``app = fal.wrap_app(MyApp)`` at the top level: ``file.py::app`` names the App."""
    (tmp_path / "wrapped.py").write_text(
        WRAPPED_APP.replace('if __name__ == "__main__":\n    app = ', "app = ").replace(
            "    app()\n", "\n\n@fal.function\ndef helper():\n    return 1\n"
        )
    )
    assert load_app_class(f"{tmp_path / 'wrapped.py'}::app").__name__ == "Doubler"
    assert load_app_class(str(tmp_path / "wrapped.py")).__name__ == "Doubler"
    with pytest.raises(AppLoadError, match=r"is a fal\.function"):
        load_app_class(f"{tmp_path / 'wrapped.py'}::helper")
