"""``Authorization: Key`` checks."""

from __future__ import annotations

import pytest

from minifal.fleet.auth import key_matches

pytestmark = pytest.mark.unit

# -- key_matches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("Key s3cret", True),
        ("key s3cret", True),
        ("KEY  s3cret ", True),
        ("Bearer s3cret", True),
        ("Key wrong", False),
        ("Key s3cret-and-more", False),
        ("Key ", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("", False),
        (None, False),
    ],
)
def test_key_matches(header: str | None, matches: bool) -> None:
    assert key_matches(header, "s3cret") is matches
