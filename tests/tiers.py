"""The suite's tiers: every test carries exactly one, so a selector picks a loop by its cost.

``unit`` in-process and fast (no processes, no listening sockets, no torch.compile); ``process``
starts processes or servers; ``compile`` runs real torch.compile; ``browser`` drives a browser;
``gpu`` needs a GPU. A test that needs several of these takes the costliest: gpu, browser,
compile, process, unit (a compiling fleet is ``compile``). ``conftest.py`` refuses to collect a
test without exactly one tier.
"""

from __future__ import annotations

from collections.abc import Iterable

TIERS = ("unit", "process", "compile", "browser", "gpu")


def tier_problem(nodeid: str, marker_names: Iterable[str]) -> str | None:
    """Why this test's tier marks are wrong, or None when it has exactly one tier."""
    tiers = sorted({name for name in marker_names if name in TIERS})
    if not tiers:
        return (
            f"{nodeid} has no tier: add `pytestmark = pytest.mark.<tier>` to its module "
            f"(or a mark to the test), tier one of {', '.join(TIERS)} (see docs/testing.md)"
        )
    if len(tiers) > 1:
        return f"{nodeid} has {len(tiers)} tiers ({', '.join(tiers)}): keep the costliest only"
    return None
