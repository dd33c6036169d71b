"""``prepare_inductor()``: Inductor's torch_key and the autotune redirect, once per process,
at the first artifact load or compile (``compiled/cache/inductor_setup.py``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from minifal.compiled.cache import inductor_setup

pytestmark = pytest.mark.unit


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What prepare_inductor() did, in a process where it has not run yet."""
    done: list[str] = []
    monkeypatch.setattr(inductor_setup, "_prepared", False)
    monkeypatch.setattr(inductor_setup, "prime_torch_key", lambda: done.append("key"))
    redirect = lambda: done.append("redirect")  # noqa: E731
    monkeypatch.setattr(inductor_setup, "redirect_autotune_lookups", redirect)
    return done


def test_the_first_caller_prepares_and_the_others_find_it_done(calls: list[str]) -> None:
    threads = [threading.Thread(target=inductor_setup.prepare_inductor) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    inductor_setup.prepare_inductor()
    assert calls == ["key", "redirect"]


def test_the_redirect_follows_its_setting(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIFAL_CACHE_AUTOTUNE_REDIRECT", "0")
    inductor_setup.prepare_inductor()
    assert calls == ["key"]


def test_an_artifact_load_prepares_inductor_first(
    calls: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from minifal.compiled.precompiled import artifact_files

    def load(path: str, form: str) -> str:
        calls.append(f"load {form}")
        return "artifact"

    monkeypatch.setattr(artifact_files, "load_compiled_artifact", load)
    monkeypatch.setattr(artifact_files, "inductor_vec_isa_ok", lambda: True)  # no config patch
    assert artifact_files.load_artifact(tmp_path / "a.bin") == "artifact"
    assert calls == ["key", "redirect", "load binary"]
