"""Warm runners find the Triton tuning results they unpacked (compile_cache/autotune_lookup.py)."""

from __future__ import annotations

import os

import pytest

from minifal.compiled.cache.autotune_lookup import (
    redirect_autotune_lookups,
    redirected_dir,
    redirected_file,
)

pytestmark = pytest.mark.unit

OWN = "/tmp/minifal-inductor-222-bbb/inductor"


def test_a_kernel_compiled_in_another_private_dir_is_looked_up_in_ours() -> None:
    assert redirected_dir("/tmp/minifal-inductor-111-aaa/inductor/ab", OWN) == f"{OWN}/ab"
    # another parent dir (MINIFAL_CACHE_LOCAL_ROOT on another disk) is still another runner's
    assert redirected_dir("/scratch/minifal-inductor-1-x/inductor/cd", OWN) == f"{OWN}/cd"


def test_a_kernel_file_keeps_its_name() -> None:
    foreign = "/tmp/minifal-inductor-111-aaa/inductor/ab/cabc.py"
    assert redirected_file(foreign, OWN) == f"{OWN}/ab/cabc.py"
    assert redirected_file("/tmp/x/cabc.py", OWN) == "/tmp/x/cabc.py"


def test_other_lookups_are_left_alone() -> None:
    assert redirected_dir(f"{OWN}/ab", OWN) == f"{OWN}/ab"
    assert redirected_dir("/tmp/torchinductor_me/ab", OWN) == "/tmp/torchinductor_me/ab"
    assert redirected_dir("/tmp/elsewhere/inductor/ab", OWN) == "/tmp/elsewhere/inductor/ab"
    assert redirected_dir("ab", OWN) == "ab"


def test_the_patched_torch_function_uses_the_redirect(monkeypatch: pytest.MonkeyPatch) -> None:
    autotune_cache = pytest.importorskip("torch._inductor.runtime.autotune_cache")
    assert redirect_autotune_lookups()
    assert redirect_autotune_lookups()  # once per process
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", OWN)
    create = autotune_cache.AutotuneCache.create
    meta = {"autotune_local_cache": True}
    foreign = create(meta, "/tmp/minifal-inductor-111-aaa/inductor/ab/cabc.py", "configs")
    own = create(meta, f"{OWN}/ab/cabc.py", "configs")
    assert foreign.local_cache[1] == own.local_cache[1]
    assert os.path.dirname(own.local_cache[1]) == f"{OWN}/ab"
