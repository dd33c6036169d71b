"""apps/sd_turbo.py's batched generation on CPU (tiny pipeline, eager): the batch plan, the same
pixels batched as alone, and the same file without minifal's @batched (as on fal)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("torch")

import numpy as np
from sd_turbo_support import APPS_DIR, app_module

sd_turbo = app_module("sd_turbo")
load_sd_turbo_pipeline = app_module("sd_turbo_pipeline").load_sd_turbo_pipeline

pytestmark = pytest.mark.unit


def test_batch_sizes_are_parsed_sorted_and_start_at_one() -> None:
    assert sd_turbo.batch_sizes("8,1, 2,4,4") == (1, 2, 4, 8)
    for bad in ("", "2,4", "1,x", "0,1"):
        with pytest.raises(ValueError, match=sd_turbo.BATCH_SIZES_ENV):
            sd_turbo.batch_sizes(bad)


def test_a_runner_takes_two_batches_of_the_largest_size_or_three_requests_unbatched() -> None:
    assert sd_turbo.requests_per_runner(None) == 3
    assert sd_turbo.requests_per_runner("1") == 3
    assert sd_turbo.requests_per_runner("1,2,4,8,16") == 32


@pytest.mark.parametrize(
    ("count", "sizes", "chunks"),
    [
        (1, (1, 2, 4, 8, 16), [(1, 1)]),
        (3, (1, 2, 4, 8, 16), [(2, 2), (1, 1)]),  # unmeasured: the least padding
        (16, (1, 2, 4, 8, 16), [(16, 16)]),
        (19, (1, 2, 4, 8, 16), [(16, 16), (2, 2), (1, 1)]),
        (3, (1,), [(1, 1), (1, 1), (1, 1)]),
    ],
)
def test_unmeasured_a_batch_is_split_into_the_least_padding(
    count: int, sizes: tuple[int, ...], chunks: list[tuple[int, int]]
) -> None:
    assert sd_turbo.padded_chunks(count, sizes) == chunks


# Seconds of one 512x512 call per batch size, measured in-process on an H200 (section 12).
H200_COSTS = {1: 0.0206, 2: 0.0324, 4: 0.0569, 8: 0.0953, 16: 0.1452}


@pytest.mark.parametrize(
    ("count", "chunks"),
    [
        (3, [(2, 2), (1, 1)]),  # 53 ms, not 57 for a padded 4
        (5, [(4, 4), (1, 1)]),  # 77 ms, not 95 for a padded 8
        (7, [(7, 8)]),  # a padded 8 (95 ms) beats 4 + 2 + 1 (110 ms)
        (11, [(11, 16)]),  # a padded 16 (145 ms) beats 8 + 2 + 1 (148 ms)
        (16, [(16, 16)]),
    ],
)
def test_with_measured_costs_a_batch_is_split_into_the_cheapest_calls(
    count: int, chunks: list[tuple[int, int]]
) -> None:
    assert sd_turbo.padded_chunks(count, (1, 2, 4, 8, 16), H200_COSTS) == chunks


@pytest.fixture(scope="module")
def app() -> object:
    """The app's generation methods over the tiny pipeline, batch sizes 1, 2 and 4 everywhere."""
    pipeline = load_sd_turbo_pipeline("random-tiny", device="cpu").pipeline
    app = sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo)
    app.pipeline, app.device, app.lock = pipeline, pipeline.device, threading.Lock()
    app.batch_sizes = (1, 2, 4)
    app.warmed_batches, app.batch_costs = {}, {}
    return app


def test_a_batched_request_gets_the_image_its_seed_gives_alone(app) -> None:
    """Three 256x256 requests (padded to a batch of 4) and one 256x320 request in one batch."""
    requests = [
        sd_turbo.ImageRequest("a red fox in the snow", 256, 256, 11),
        sd_turbo.ImageRequest("a lighthouse at dusk", 256, 320, 12),
        sd_turbo.ImageRequest("a bowl of ramen", 256, 256, 13),
        sd_turbo.ImageRequest("a red fox in the snow", 256, 256, 14),
    ]
    app.batch_costs = {(256, 256): {1: 1.0, 2: 2.0, 4: 2.5}}  # so 3 requests are padded to 4
    batched = sd_turbo.SDTurbo.generate_batch.__wrapped__(app, requests)
    differences = []
    for request, picture in zip(requests, batched, strict=True):
        alone = app.generate_image(request.prompt, request.width, request.height, request.seed)
        assert picture.size == alone.size == (request.width, request.height)
        difference = np.abs(np.asarray(picture, np.int16) - np.asarray(alone, np.int16))
        differences.append(int(difference.max()))
    print(f"max pixel difference, batched vs alone (0-255): {max(differences)}")
    # Eager vs compiled differ by up to 1 of 255 (BENCHMARKS.md section 11): no more here.
    assert max(differences) <= 1
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[3]))  # other seed


def test_the_same_file_without_minifal_runs_each_request_as_a_batch_of_one() -> None:
    """As on fal: ``minifal.runner.batching`` cannot be imported; the app's shim calls the batch
    function with a list of one."""
    script = (
        "import sys\n"
        "sys.modules['minifal.runner.batching'] = None\n"
        "from minifal.compat.fal_alias import install_fal_alias\n"
        "install_fal_alias()\n"
        "import sd_turbo\n"
        "class Fake:\n"
        "    generate_batch = sd_turbo.SDTurbo.__dict__['generate_batch']\n"
        "    batch_sizes, warmed_batches, batch_costs = (1,), {}, {}\n"
        "    def generate_pixels(self, prompts, seeds, width, height):\n"
        "        import torch\n"
        "        return torch.full((len(prompts), height, width, 3), seeds[0], dtype=torch.uint8)\n"
        "picture = Fake().generate_batch(sd_turbo.ImageRequest('x', 8, 16, 5))\n"
        "print(picture.size, picture.getpixel((0, 0)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=APPS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "(8, 16) (5, 5, 5)"
