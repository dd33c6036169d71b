"""``App.requirements``: checked against what is installed, never installed."""

from __future__ import annotations

import pytest

from minifal.compat.requirements_check import unmet_requirements

pytestmark = pytest.mark.unit

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
