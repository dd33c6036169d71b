"""``minifal run`` says loudly when its gateway listens beyond loopback with no auth key."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_support import start_fleet

pytestmark = pytest.mark.process

ECHO_APP = Path(__file__).parent / "apps" / "echo_app.py"


def test_a_gateway_on_every_address_without_a_key_warns_at_start(tmp_path: Path) -> None:
    with start_fleet(ECHO_APP, tmp_path, workers=1, extra_args=("--host", "0.0.0.0")) as fleet:
        log = fleet.log()
    assert "with no auth key: anyone who reaches this port can call the app" in log
    assert "--auth-key KEY" in log


def test_a_gateway_on_loopback_says_nothing_of_keys(tmp_path: Path) -> None:
    with start_fleet(ECHO_APP, tmp_path, workers=1) as fleet:
        log = fleet.log()
    assert "with no auth key" not in log
