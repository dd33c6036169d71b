"""Library noise is dropped from the logs; everything else passes."""

from __future__ import annotations

import logging

import pytest

from minifal.host.log_format import configure_logging

pytestmark = pytest.mark.unit


def test_library_noise_is_dropped_and_other_warnings_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging()
    configure_logging()  # idempotent: one filter
    noisy = logging.getLogger("transformers.utils.import_utils")
    assert len(noisy.filters) == 1
    with caplog.at_level(logging.WARNING):
        noisy.warning(
            "`CLIPImageProcessor` requires torchvision (not installed); falling back to "
            "`CLIPImageProcessorPil` for backward compatibility."
        )
        noisy.warning("Could not import module 'X'")
    assert [record.getMessage() for record in caplog.records] == ["Could not import module 'X'"]
