"""Where a random-weight SD-Turbo start goes: imports, building the weights, or loading saved ones.

Issue 9 asked whether storing the generated random weights once in the data dir would start a
runner faster than generating them. Each mode runs in a fresh process and prints one JSON line:

    python benchmarks/sd_turbo_weights.py build /tmp/sd-saved   # imports, build random-full, save
    python benchmarks/sd_turbo_weights.py load /tmp/sd-saved    # imports, from_pretrained(saved)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    mode, saved = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    import torch

    torch_done = time.perf_counter()
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    imports_done = time.perf_counter()
    timings = {
        "import_torch": torch_done - start,
        "import_diffusers_transformers": imports_done - torch_done,
    }
    if mode == "build":
        sys.path.insert(0, str(REPO / "apps"))
        from sd_turbo_pipeline import load_sd_turbo_pipeline

        pipeline = load_sd_turbo_pipeline("random-full").pipeline
        torch.cuda.synchronize()
        built = time.perf_counter()
        pipeline.save_pretrained(saved, safe_serialization=True)
        timings.update(build_random_full=built - imports_done, save=time.perf_counter() - built)
    else:
        from diffusers import StableDiffusionPipeline

        StableDiffusionPipeline.from_pretrained(
            saved,
            torch_dtype=torch.float16,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        ).to("cuda")
        torch.cuda.synchronize()
        timings["load_saved"] = time.perf_counter() - imports_done
    print(json.dumps({mode: {k: round(v, 2) for k, v in timings.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
