"""How long the SD-Turbo app's imports take in a fresh process, step by step, in the order its
``setup()`` meets them (torch, the app, CUDA, minifal's precompiled path, Inductor, Triton,
diffusers, transformers). Each step's seconds are cumulative from the start.

    python benchmarks/sd_turbo_import_probe.py --out probe.json

On a GPU machine run it twice: the first pays the page cache; the second is what a runner on a
warm machine pays. Prints a table; writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "apps"))
    start = time.perf_counter()
    laps: list[tuple[str, float]] = []

    def lap(what: str) -> None:
        laps.append((what, time.perf_counter() - start))
        print(f"{laps[-1][1]:7.2f} s  {what}", flush=True)

    import torch

    lap("import torch")
    from minifal.compat.fal_alias import install_fal_alias

    install_fal_alias()
    importlib.import_module("fal")
    lap("import fal (minifal's alias)")
    importlib.import_module("sd_turbo")
    lap("import apps/sd_turbo.py")
    from sd_turbo_pipeline import default_device

    device = default_device()
    lap(f"default_device() -> {device}")
    if device == "cuda":
        torch.zeros(1, device="cuda")
        lap("first CUDA tensor (the context)")
    importlib.import_module("minifal.compiled.precompiled")
    lap("import minifal.compiled.precompiled")
    importlib.import_module("torch._inductor.config")
    lap("import torch._inductor.config")
    importlib.import_module("torch._inductor.compile_fx")
    lap("import torch._inductor.compile_fx")
    if device == "cuda":  # CPU builds of torch come without Triton
        importlib.import_module("triton")
        lap("import triton")
    importlib.import_module("diffusers").StableDiffusionPipeline  # noqa: B018 (lazy import)
    lap("import diffusers' StableDiffusionPipeline")
    importlib.import_module("transformers").CLIPTextModel  # noqa: B018 (lazy import)
    lap("import transformers' CLIPTextModel")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "laps": laps}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
