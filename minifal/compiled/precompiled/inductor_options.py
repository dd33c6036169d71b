"""Inductor settings for one precompiled module's compiles: ``module(m, inductor_options=...)``.

A module's options are Inductor config names and values, as ``torch.compile(options=...)`` takes
them; they reach ``standalone_compile`` in every path that compiles (inline, in a worker, in the
switchover). They are part of what names the module's artifacts (``structure.module_digest``):
an artifact compiled with other options is another artifact, never loaded in its place. So
they must be written down exactly: JSON values only (a worker's job and the digest carry them),
under names this torch's Inductor has.

``triton.cudagraphs`` is refused: a precompiled artifact is called as a plain function, and
minifal captures its own CUDA graphs (``cuda_graphs=True``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from minifal.compiled import torch_internals

MAX_AUTOTUNE: Mapping[str, Any] = {"max_autotune": True, "coordinate_descent_tuning": True}
"""``torch.compile(mode="max-autotune-no-cudagraphs")``'s settings
(``torch._inductor.list_mode_options``, the same on torch 2.11 and 2.13): Inductor times its
Triton convolution and matmul templates against cuDNN and cuBLAS for each one, and tunes each
Triton kernel's block sizes further. Compiles take several times longer: the SD-Turbo VAE
decoder at batch 16 on an H100 (2026-12-06, ``benchmarks/sd_turbo_vae_decoder.py``) ran in
93.3 ms instead of 107.7, and compiled in 99-168 s instead of 13-15 s."""

REFUSED = {"triton.cudagraphs": "minifal captures its own CUDA graphs: pass cuda_graphs=True"}
_JSON_SCALARS = (str, int, float, bool, type(None))


def checked_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a plain dict sorted by name; ``ValueError`` naming what is wrong: not a
    JSON value, a name Inductor does not have, a refused setting."""
    if not options:
        return {}
    unknown = sorted(name for name in options if name not in torch_internals.inductor_settings())
    if unknown:
        raise ValueError(f"inductor_options: Inductor has no setting {', '.join(unknown)}")
    for name, value in options.items():
        if not _is_json(value):
            raise ValueError(
                f"inductor_options[{name!r}]: {value!r} is not a JSON value "
                "(str, int, float, bool, None, or lists and dicts of them)"
            )
        if name in REFUSED and value:
            raise ValueError(f"inductor_options[{name!r}]: {REFUSED[name]}")
    return dict(sorted(options.items()))


def options_text(options: Mapping[str, Any]) -> str:
    """One stable line for ``options`` (keys sorted at every level), for digests and logs."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def _is_json(value: Any) -> bool:
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, list | tuple):
        return all(_is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json(item) for key, item in value.items())
    return False
