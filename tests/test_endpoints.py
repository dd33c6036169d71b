"""Endpoints: ``@fal.endpoint``/``@fal.realtime`` specs, ``App.endpoints()``, ``HealthCheck``."""

from __future__ import annotations

import pytest

import minifal as fal
from minifal import AppSettingsError

pytestmark = pytest.mark.unit

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
