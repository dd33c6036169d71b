"""``GpuPool``: which GPUs each runner gets."""

from __future__ import annotations

import pytest

from minifal.fleet.gpu_pool import GpuPool

pytestmark = pytest.mark.unit

# -- GpuPool ---------------------------------------------------------------------------------------


def test_gpu_pool_one_gpu_each_then_round_robin_shared() -> None:
    pool = GpuPool(["0", "1"], 1)
    assert pool.acquire() == (["0"], False)
    assert pool.acquire() == (["1"], False)
    assert pool.acquire() == (["0"], True)
    assert pool.acquire() == (["1"], True)
    assert pool.acquire() == (["0"], True)


def test_gpu_pool_several_gpus_per_runner() -> None:
    pool = GpuPool(["3", "1", "2", "0"], 2)
    assert pool.acquire() == (["3", "1"], False)  # the order the user gave
    assert pool.acquire() == (["2", "0"], False)
    assert pool.acquire() == (["3", "1"], True)


def test_gpu_pool_release_frees_gpus_for_the_next_runner() -> None:
    pool = GpuPool(["0", "1"], 1)
    first, _ = pool.acquire()
    pool.acquire()
    pool.release(first)
    assert pool.acquire() == (["0"], False)
    pool.release(["0"])
    pool.release(["0"])  # releasing more than acquired never goes below zero
    assert pool.users["0"] == 0
    assert pool.acquire() == (["0"], False)


def test_gpu_pool_without_gpus_runs_on_cpu() -> None:
    assert GpuPool([], 1).acquire() == ([], False)
    assert GpuPool(["0"], 0).acquire() == ([], False)
