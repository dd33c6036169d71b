"""Unit tests of the App programming model: settings, names, endpoints, the ``fal`` alias."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import minifal as fal
from minifal import AppSettingsError
from minifal.requirements_check import unmet_requirements
from minifal.settings import AppSettings, kebab_case

# -- defaults and class keywords -------------------------------------------------------------

FAL_DEFAULTS = {
    "machine_type": "S",
    "num_gpus": None,
    "keep_alive": 60,
    "min_concurrency": 0,
    "max_concurrency": None,
    "concurrency_buffer": 0,
    "concurrency_buffer_perc": 0,
    "scaling_delay": 0,
    "max_multiplexing": 1,
    "request_timeout": None,
    "startup_timeout": None,
    "requirements": [],
    "app_name": None,
    "app_auth": None,
}


def test_defaults_equal_fal_defaults() -> None:
    class Plain(fal.App):
        pass

    settings = Plain.settings()
    for name, expected in FAL_DEFAULTS.items():
        assert getattr(settings, name) == expected, name
        assert getattr(Plain, name) == expected, name
    assert settings.gpus_per_runner == 0
    assert not settings.wants_gpu


def test_every_fal_setting_is_accepted_as_a_class_attribute() -> None:
    class Everything(fal.App):
        machine_type = ["GPU-H100", "GPU-A100"]
        num_gpus = 2
        keep_alive = 300
        min_concurrency = 1
        max_concurrency = 4
        concurrency_buffer = 1
        concurrency_buffer_perc = 20
        scaling_delay = 5
        max_multiplexing = 3
        request_timeout = 120
        startup_timeout = 900
        requirements = ["torch==2.5.0"]
        local_python_modules = ["helpers"]
        app_name = "everything"
        app_auth = "private"
        app_files = ["weights.txt"]
        secrets = ["HF_TOKEN"]
        regions = ["us-east"]
        image = object()
        kind = "container"
        termination_grace_period_seconds = 20

    settings = Everything.settings()
    assert settings.machine_types == ["GPU-H100", "GPU-A100"]
    assert settings.keep_alive == 300
    assert settings.max_multiplexing == 3
    assert settings.startup_timeout == 900
    assert settings.app_auth == "private"
    assert settings.termination_grace_period_seconds == 20
    assert Everything.resolved_app_name() == "everything"


def test_class_keywords_set_settings() -> None:
    class A(fal.App, keep_alive=300, max_concurrency=2, name="a"):
        pass

    assert A.settings().keep_alive == 300
    assert A.settings().max_concurrency == 2
    assert A.keep_alive == 300
    assert A.resolved_app_name() == "a"


def test_settings_are_inherited_and_overridable() -> None:
    class Base(fal.App, keep_alive=120):
        max_multiplexing = 4

    class Child(Base, max_concurrency=3):
        pass

    assert Child.settings().keep_alive == 120
    assert Child.settings().max_multiplexing == 4
    assert Child.settings().max_concurrency == 3
    assert Base.settings().max_concurrency is None


def test_unknown_class_keyword_names_the_setting_and_suggests_one() -> None:
    with pytest.raises(AppSettingsError) as error:

        class Typo(fal.App, keep_alvie=300):
            pass

    message = str(error.value)
    assert "keep_alvie" in message
    assert "Typo" in message
    assert "keep_alive" in message  # the suggestion


def test_unknown_class_keyword_without_a_close_match() -> None:
    with pytest.raises(AppSettingsError, match="zzz_unrelated"):

        class Odd(fal.App, zzz_unrelated=1):
            pass


def test_near_miss_class_attribute_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="minifal.app"):

        class NearMiss(fal.App):
            keep_alve = 300
            my_own_attribute = "fine"

    assert "NearMiss.keep_alve" in caplog.text
    assert "keep_alive" in caplog.text
    assert "my_own_attribute" not in caplog.text


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("keep_alive", -1),
        ("max_multiplexing", 0),
        ("app_auth", "weird"),
        ("min_concurrency", -2),
        ("max_concurrency", 0),
        ("machine_type", []),
        ("request_timeout", 0),
    ],
)
def test_bad_value_names_class_and_setting(attribute: str, value: object) -> None:
    with pytest.raises(AppSettingsError) as error:
        type("BadValue", (fal.App,), {attribute: value})
    assert f"BadValue.{attribute}" in str(error.value)


def test_bad_value_as_class_keyword() -> None:
    with pytest.raises(AppSettingsError, match=r"Keyworded\.keep_alive"):

        class Keyworded(fal.App, keep_alive=-5):
            pass


def test_settings_error_is_a_type_error() -> None:
    assert issubclass(AppSettingsError, TypeError)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [
        ("MyGoodApp", "my-good-app"),
        ("SDTurbo", "sd-turbo"),
        ("App2", "app2"),
        ("my_app", "my-app"),
        ("HTTPServerApp", "http-server-app"),
    ],
)
def test_kebab_case(class_name: str, expected: str) -> None:
    assert kebab_case(class_name) == expected


def test_app_name_derived_from_class_name() -> None:
    class MyGoodApp(fal.App):
        pass

    assert MyGoodApp.resolved_app_name() == "my-good-app"


def test_explicit_app_name_wins() -> None:
    class MyGoodApp(fal.App):
        app_name = "custom-name"

    assert MyGoodApp.resolved_app_name() == "custom-name"


# -- lifecycle rules ---------------------------------------------------------------------------


def test_overriding_init_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="__init__") as error:

        class WithInit(fal.App):
            def __init__(self) -> None:
                self.model = None

    assert "setup()" in str(error.value)


# -- endpoints -------------------------------------------------------------------------------


def test_endpoints_are_sorted_by_path_with_their_kinds() -> None:
    class Routes(fal.App):
        @fal.endpoint("/z")
        def last(self) -> dict:
            return {}

        @fal.realtime("/realtime")
        def live(self, input: dict) -> dict:
            return input

        @fal.endpoint("/")
        def root(self) -> dict:
            return {}

        @fal.endpoint("/ws", is_websocket=True)
        async def socket(self, ws) -> None:
            pass

        @fal.endpoint("/health-probe", health_check=fal.HealthCheck(failure_threshold=2))
        def probe(self) -> dict:
            return {}

    endpoints = Routes.endpoints()
    assert [spec.path for _, spec in endpoints] == ["/", "/health-probe", "/realtime", "/ws", "/z"]
    assert [name for name, _ in endpoints] == ["root", "probe", "live", "socket", "last"]
    kinds = {spec.path: spec.kind for _, spec in endpoints}
    assert kinds == {
        "/": "http",
        "/health-probe": "http",
        "/realtime": "realtime",
        "/ws": "websocket",
        "/z": "http",
    }
    health = dict(endpoints)["probe"].health_check
    assert health == fal.HealthCheck(
        start_period_seconds=30, timeout_seconds=5, failure_threshold=2, call_regularly=True
    )


def test_duplicate_endpoint_paths_are_an_error() -> None:
    class Duplicate(fal.App):
        @fal.endpoint("/run")
        def first(self) -> dict:
            return {}

        @fal.endpoint("/run")
        def second(self) -> dict:
            return {}

    with pytest.raises(AppSettingsError, match="/run") as error:
        Duplicate.endpoints()
    assert "first()" in str(error.value)
    assert "second()" in str(error.value)


def test_two_health_checks_are_an_error() -> None:
    class TwoChecks(fal.App):
        @fal.endpoint("/a", health_check=fal.HealthCheck())
        def a(self) -> dict:
            return {}

        @fal.endpoint("/b", health_check=fal.HealthCheck())
        def b(self) -> dict:
            return {}

    with pytest.raises(AppSettingsError, match="health_check"):
        TwoChecks.endpoints()


def test_endpoint_path_must_start_with_a_slash() -> None:
    with pytest.raises(ValueError, match="'/'"):
        fal.endpoint("run")


def test_websocket_endpoint_cannot_be_the_health_check() -> None:
    with pytest.raises(ValueError):
        fal.endpoint("/ws", is_websocket=True, health_check=fal.HealthCheck())


def test_health_check_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        fal.HealthCheck(failure_threshold=0)
    with pytest.raises(ValueError, match="timeout_seconds"):
        fal.HealthCheck(timeout_seconds=-1)


def test_default_health_answers_the_version() -> None:
    class Plain(fal.App):
        pass

    assert Plain().health() == {"version": fal.__version__}


# -- GPUs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine_type", "num_gpus", "expected"),
    [
        ("S", None, 0),
        ("M", None, 0),
        ("GPU-H100", None, 1),
        ("GPU", None, 1),
        (["GPU-H100", "GPU-A100"], None, 1),
        ("GPU-H100", 2, 2),
        ("S", 0, 0),
    ],
)
def test_gpus_per_runner(
    machine_type: str | list[str], num_gpus: int | None, expected: int
) -> None:
    settings = AppSettings(machine_type=machine_type, num_gpus=num_gpus)
    assert settings.gpus_per_runner == expected


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
        from minifal.fal_alias import install_fal_alias
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
        from minifal.fal_alias import install_fal_alias, real_fal_installed
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


# -- requirements ------------------------------------------------------------------------------


def test_unmet_requirements() -> None:
    problems = unmet_requirements(
        [
            "pydantic>=2",
            "pydantic<1",
            "surely-not-installed-package-xyz",
            "not a requirement !!",
            "pydantic<1; python_version < '3'",
        ]
    )
    assert len(problems) == 3, problems
    assert problems[0].startswith("pydantic<1: pydantic ")
    assert "is installed" in problems[0]
    assert "surely-not-installed-package-xyz is not installed" in problems[1]
    assert "is not a valid requirement" in problems[2]


def test_met_requirements_are_silent() -> None:
    assert unmet_requirements([]) == []
    assert unmet_requirements(["fastapi", "msgpack>=1.0", "httpx"]) == []
