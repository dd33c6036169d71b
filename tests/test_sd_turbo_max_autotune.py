"""apps/sd_turbo.py's ``MINIFAL_SD_MAX_AUTOTUNE``: which precompiled modules are wrapped with
``inductor_options=MAX_AUTOTUNE`` (tiny pipeline on CPU; the precompiled block is a recorder and
the warmup is skipped: the real compile with these options is tested in
tests/test_precompiled_processes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("torch")

from sd_turbo_support import app_module

from minifal.compiled.precompiled import MAX_AUTOTUNE

sd_turbo = app_module("sd_turbo")

pytestmark = pytest.mark.unit


class RecordingBlock:
    """Stands for the ``precompiled_modules`` block: records what each module is wrapped with."""

    def __init__(self) -> None:
        self.wrapped: list[tuple[str, Any]] = []

    def module(self, module, *, cuda_graphs: bool, inductor_options=None):
        self.wrapped.append((type(module).__name__, inductor_options))
        return module


def set_up(monkeypatch: pytest.MonkeyPatch, **env: str) -> RecordingBlock:
    """The app's ``setup()`` on the tiny pipeline, precompiled, with ``env``; no warmup."""
    block = RecordingBlock()

    @contextmanager
    def precompiled_modules(_key: str) -> Iterator[RecordingBlock]:
        yield block

    monkeypatch.setattr(sd_turbo, "minifal_precompiled_modules", lambda: precompiled_modules)
    monkeypatch.setattr(sd_turbo.SDTurbo, "warm_up", lambda _self: None)
    monkeypatch.setenv("MINIFAL_SD_WEIGHTS", "random-tiny")
    monkeypatch.setenv(sd_turbo.COMPILE_ENV, "precompiled")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo).setup()
    return block


def test_the_named_modules_compile_with_max_autotune_the_others_as_before(monkeypatch) -> None:
    block = set_up(
        monkeypatch,
        **{sd_turbo.PRECOMPILE_ENV: "unet,vae", sd_turbo.MAX_AUTOTUNE_ENV: "vae"},
    )
    assert block.wrapped == [("UNet2DConditionModel", None), ("Decoder", MAX_AUTOTUNE)]


def test_by_default_no_module_compiles_with_max_autotune(monkeypatch) -> None:
    monkeypatch.delenv(sd_turbo.MAX_AUTOTUNE_ENV, raising=False)
    block = set_up(monkeypatch, **{sd_turbo.PRECOMPILE_ENV: "unet,vae"})
    assert block.wrapped == [("UNet2DConditionModel", None), ("Decoder", None)]


def test_an_unknown_module_is_refused_naming_the_knob(monkeypatch) -> None:
    with pytest.raises(ValueError, match=sd_turbo.MAX_AUTOTUNE_ENV):
        set_up(monkeypatch, **{sd_turbo.MAX_AUTOTUNE_ENV: "vea"})
