"""The App's settings: fal's defaults, class attributes and keywords, names, GPUs, and the
rules of the App class itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from conftest import start_served_app
from fleet_support import start_fleet

import minifal as fal
from minifal import AppSettingsError
from minifal.runner.app_loader import load_app_class
from minifal.runner.app_manifest import build_manifest
from minifal.settings import SETTING_NAMES, AppSettings, kebab_case

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


@pytest.mark.unit
def test_defaults_equal_fal_defaults() -> None:
    class Plain(fal.App):
        pass

    settings = Plain.settings()
    for name, expected in FAL_DEFAULTS.items():
        assert getattr(settings, name) == expected, name
        assert getattr(Plain, name) == expected, name
    assert settings.gpus_per_runner == 0
    assert not settings.wants_gpu


@pytest.mark.unit
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


@pytest.mark.unit
def test_class_keywords_set_settings() -> None:
    class A(fal.App, keep_alive=300, max_concurrency=2, name="a"):
        pass

    assert A.settings().keep_alive == 300
    assert A.settings().max_concurrency == 2
    assert A.keep_alive == 300
    assert A.resolved_app_name() == "a"


@pytest.mark.unit
def test_settings_are_inherited_and_overridable() -> None:
    class Base(fal.App, keep_alive=120):
        max_multiplexing = 4

    class Child(Base, max_concurrency=3):
        pass

    assert Child.settings().keep_alive == 120
    assert Child.settings().max_multiplexing == 4
    assert Child.settings().max_concurrency == 3
    assert Base.settings().max_concurrency is None


@pytest.mark.unit
def test_a_near_miss_class_keyword_is_kept_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """fal takes any class keyword (into ``host_kwargs``); minifal too, warning of a typo."""
    with caplog.at_level(logging.WARNING, logger="minifal.app"):

        class Typo(fal.App, keep_alvie=300):
            pass

    assert Typo.host_kwargs == {"keep_alvie": 300}
    assert Typo.settings().keep_alive == 60
    assert "Typo" in caplog.text and "keep_alvie" in caplog.text
    assert "keep_alive" in caplog.text  # the suggestion


@pytest.mark.unit
def test_unknown_and_private_class_keywords_are_kept_and_logged_once_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="minifal.app"):

        class Odd(fal.App, zzz_unrelated=1, _scheduler_options={"storage_region": "x"}):
            pass

        class Odder(Odd, zzz_unrelated=2):
            pass

    assert Odd.host_kwargs == {"zzz_unrelated": 1, "_scheduler_options": {"storage_region": "x"}}
    assert Odder.host_kwargs["zzz_unrelated"] == 2
    assert Odder.host_kwargs["_scheduler_options"] == {"storage_region": "x"}
    records = [r for r in caplog.records if "zzz_unrelated" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]


@pytest.mark.unit
def test_near_miss_class_attribute_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="minifal.app"):

        class NearMiss(fal.App):
            keep_alve = 300
            my_own_attribute = "fine"

    assert "NearMiss.keep_alve" in caplog.text
    assert "keep_alive" in caplog.text
    assert "my_own_attribute" not in caplog.text


@pytest.mark.unit
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


@pytest.mark.unit
def test_bad_value_as_class_keyword() -> None:
    with pytest.raises(AppSettingsError, match=r"Keyworded\.keep_alive"):

        class Keyworded(fal.App, keep_alive=-5):
            pass


@pytest.mark.unit
def test_settings_error_is_a_type_error() -> None:
    assert issubclass(AppSettingsError, TypeError)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.unit
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


@pytest.mark.unit
def test_app_name_derived_from_class_name() -> None:
    class MyGoodApp(fal.App):
        pass

    assert MyGoodApp.resolved_app_name() == "my-good-app"


@pytest.mark.unit
def test_explicit_app_name_wins() -> None:
    class MyGoodApp(fal.App):
        app_name = "custom-name"

    assert MyGoodApp.resolved_app_name() == "custom-name"


# -- lifecycle rules ---------------------------------------------------------------------------


@pytest.mark.unit
def test_overriding_init_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="__init__") as error:

        class WithInit(fal.App):
            def __init__(self) -> None:
                self.model = None

    assert "setup()" in str(error.value)


# -- GPUs --------------------------------------------------------------------------------------


@pytest.mark.unit
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


# -- methods named like settings ---------------------------------------------------------------

SETTING_NAMED_APP = """
import fal


class {class_name}(fal.App):
    {keywords}

    @fal.endpoint("/")
    def {name}(self, value: int = 1) -> dict:
        return {{"endpoint": "{name}", "value": value}}

    @fal.endpoint("/{name}")
    def {name}_twice(self, value: int = 1) -> dict:
        return {{"endpoint": "{name}", "value": 2 * value}}
"""


def write_setting_named_app(directory: Path, name: str, keywords: str = "") -> Path:
    """An app whose root endpoint is a method called ``name`` (a setting's name)."""
    path = directory / f"named_{name}.py"
    class_name = "".join(part.title() for part in name.split("_")) + "Named"
    path.write_text(
        SETTING_NAMED_APP.format(class_name=class_name, name=name, keywords=keywords or "pass")
    )
    return path


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(SETTING_NAMES))
def test_an_endpoint_named_like_a_setting_leaves_the_setting_at_its_default(
    name: str, tmp_path: Path
) -> None:
    """What ``minifal run`` does with an app (its manifest, through JSON) works whatever the
    endpoint methods are called: settings come from setting values, never from methods."""
    app_path = write_setting_named_app(tmp_path, name)
    manifest = json.loads(json.dumps(build_manifest(str(app_path))))
    assert AppSettings(**manifest["settings"]) == AppSettings(image=None)
    assert [endpoint["path"] for endpoint in manifest["endpoints"]] == ["/", f"/{name}"]
    assert load_app_class(str(app_path)).settings() == AppSettings()


@pytest.mark.unit
def test_a_setting_given_as_a_keyword_does_not_replace_a_method_of_that_name(
    tmp_path: Path,
) -> None:
    app_path = write_setting_named_app(tmp_path, "keep_alive", "")
    source = app_path.read_text().replace("(fal.App)", "(fal.App, keep_alive=300)")
    app_path.write_text(source)
    app_class = load_app_class(str(app_path))
    assert app_class.settings().keep_alive == 300
    assert [path for path, _ in [(s.path, n) for n, s in app_class.endpoints()]] == [
        "/",
        "/keep_alive",
    ]


@pytest.mark.unit
def test_a_subclass_method_named_like_a_setting_keeps_the_inherited_value() -> None:
    class Base(fal.App):
        keep_alive = 120
        requirements = ["numpy"]

    class Child(Base):
        def keep_alive(self) -> str:  # type: ignore[override]
            return "a helper, not a setting"

        @fal.endpoint("/")
        def requirements(self) -> dict:  # type: ignore[override]
            return {}

    assert Child.settings().keep_alive == 120
    assert Child.settings().requirements == ["numpy"]


MANY_SETTING_NAMES_APP = """
import fal


class ManySettingNames(fal.App, keep_alive=30):
    machine_type = "GPU-A100"
    num_gpus = 0

    @fal.endpoint("/")
    def image(self) -> dict:
        return {"endpoint": "image"}

    @fal.endpoint("/requirements")
    def requirements(self) -> dict:
        return {"endpoint": "requirements"}

    @fal.endpoint("/keep_alive")
    def keep_alive(self) -> dict:
        return {"endpoint": "keep_alive"}

    def app_name(self) -> str:
        return "a helper, not a setting"
"""


@pytest.mark.process
@pytest.mark.parametrize("command", ["serve", "run"])
def test_endpoints_named_like_settings_are_served(command: str, tmp_path: Path) -> None:
    app_path = tmp_path / "many_setting_names.py"
    app_path.write_text(MANY_SETTING_NAMES_APP)
    if command == "serve":
        server = start_served_app(str(app_path), tmp_path)
    else:
        server = start_fleet(app_path, tmp_path, workers=1)
    with server as running, httpx.Client(base_url=running.base_url, timeout=30) as client:
        assert client.post("/").json() == {"endpoint": "image"}
        assert client.post("/requirements").json() == {"endpoint": "requirements"}
        assert client.post("/keep_alive").json() == {"endpoint": "keep_alive"}
