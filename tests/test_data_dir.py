"""The data dir: where it is, and the marker that tells whether a node shares the gateway's."""

from __future__ import annotations

from pathlib import Path

import pytest

from minifal.host.data_dir import leave_marker, shared_dir_problem

pytestmark = pytest.mark.unit


def test_a_runner_that_sees_the_gateways_data_dir_has_no_problem(tmp_path: Path) -> None:
    token = leave_marker(tmp_path, "run-1")
    assert shared_dir_problem(tmp_path, "run-1", token) is None


def test_another_data_dir_is_named_as_such(tmp_path: Path) -> None:
    gateway, node = tmp_path / "gateway", tmp_path / "node"
    token = leave_marker(gateway, "run-1")
    problem = shared_dir_problem(node, "run-1", token)
    assert problem is not None
    assert "no marker" in problem and "shared filesystem" in problem

    leave_marker(node, "run-1")  # another gateway's run of the same id on that node's own disk
    assert "another marker" in (shared_dir_problem(node, "run-1", token) or "")
