"""The suite's own rule: each test has exactly one tier (``tests/tiers.py``), the tiers match the
markers pyproject.toml registers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from tiers import TIERS, tier_problem

pytestmark = pytest.mark.unit


def test_one_tier_among_other_marks_is_fine() -> None:
    assert tier_problem("t.py::test_a", ["parametrize", "unit", "skipif"]) is None
    assert tier_problem("t.py::test_a", ["process", "process"]) is None  # module and test agree


def test_no_tier_is_refused_naming_the_test_and_the_tiers() -> None:
    problem = tier_problem("t.py::test_a", ["parametrize"])
    assert problem is not None
    assert "t.py::test_a has no tier" in problem
    assert "unit, process, compile, browser, gpu" in problem


def test_two_tiers_are_refused_naming_both() -> None:
    problem = tier_problem("t.py::test_a", ["unit", "compile"])
    assert problem == "t.py::test_a has 2 tiers (compile, unit): keep the costliest only"


def test_every_tier_is_a_registered_marker() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    registered = {
        line.split(":")[0] for line in pyproject["tool"]["pytest"]["ini_options"]["markers"]
    }
    assert set(TIERS) <= registered
