"""cProfile of loading precompiled artifacts in a fresh process: where a warm runner's load goes.

    python benchmarks/precompiled_load_profile.py DIR    # DIR holds precompiled/<module>/<sig>.bin

DIR is a private cache dir filled from the store (untar a segment of
``DATA_DIR/inductor-caches/<GPU>/<key>/<fingerprint>/segments/``).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1])
    start = time.perf_counter()
    import torch

    if torch.cuda.is_available():
        torch.cuda.init()
    torch_done = time.perf_counter()
    profile = cProfile.Profile()
    profile.enable()
    from torch._inductor import CompiledArtifact

    inductor_done = time.perf_counter()
    loads = []
    for path in sorted(root.glob("precompiled/*/*.bin")):
        begin = time.perf_counter()
        CompiledArtifact.load(path=str(path), format="binary")
        loads.append(round(time.perf_counter() - begin, 2))
    profile.disable()
    print(
        f"import torch (+CUDA init) {torch_done - start:.2f} s; "
        f"import torch._inductor {inductor_done - torch_done:.2f} s; artifact loads {loads} s"
    )
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(20)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
