"""The launcher's pure decisions (no processes)."""

from __future__ import annotations

import pytest

from minifal.fleet.auth import exposure_warning
from minifal.fleet.launcher import ray_environment

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "address", ["127.0.0.1:6379", "127.0.0.2:1", "localhost:6379", "[::1]:6379", "localhost"]
)
def test_a_loopback_ray_address_keeps_ray_on_loopback(address: str) -> None:
    assert ray_environment(address) == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def test_auto_is_rays_address_variable() -> None:
    assert ray_environment("auto", "127.0.0.1:6379") == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert ray_environment("auto", "10.0.0.5:6379") == {}


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "ray-head:6379"])
def test_other_ray_addresses_leave_ray_alone(address: str) -> None:
    assert ray_environment(address) == {}


def test_a_gateway_open_beyond_loopback_without_a_key_is_said_loudly() -> None:
    warning = exposure_warning("0.0.0.0", 8080, None)
    assert warning is not None
    assert "0.0.0.0:8080" in warning and "--auth-key" in warning and "MINIFAL_AUTH_KEY" in warning
    assert exposure_warning("0.0.0.0", 8080, "secret") is None
    assert exposure_warning("127.0.0.1", 8080, None) is None
    assert exposure_warning("::1", 8080, None) is None
