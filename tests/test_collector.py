"""``minifal.host.collector``: the collector's pauses counted and timed, survivors frozen."""

from __future__ import annotations

import gc

import pytest

from minifal.host.collector import freeze_survivors, pauses_timed

pytestmark = pytest.mark.unit


def test_collections_in_the_block_are_counted_and_the_callback_removed() -> None:
    with pauses_timed() as pauses:
        gc.collect()  # a full collection
        gc.collect(0)
    assert pauses.collections >= 2
    assert pauses.full_collections >= 1
    assert pauses.seconds >= 0
    assert pauses._observe not in gc.callbacks
    assert set(pauses.details()) == {"gc_s", "gc_collections", "gc_full_collections"}


def test_frozen_survivors_are_out_of_the_collectors_reach() -> None:
    try:
        frozen = freeze_survivors()
        assert frozen == gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
