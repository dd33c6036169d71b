"""Where a warm runner's artifact load goes, one step at a time, in one thread (CPU or GPU).

    python benchmarks/precompiled_load_profile.py DIR --preload RECORD --out PREFIX

DIR holds ``precompiled/<module>/<signature>.{unpacked/,bin,json}``: a private cache dir filled
from the store (untar a segment of ``DATA_DIR/inductor-caches/<GPU>/<key>/<fingerprint>/
segments/``). ``--preload`` imports an import record first (``DATA_DIR/runner-imports/*.txt``),
as the fork server does, so what is timed is what a forked runner pays; ``--freeze`` then
freezes the collector's survivors, as a runner does before ``setup()``. Inductor's cache dir
is a fresh temp dir, as a runner's private dir is. Each artifact is loaded, then called once with
placeholder inputs (``first_call.py``); the one-time costs torch pays on the first load are
timed apart first. Prints a table; with ``--out``, writes ``PREFIX.json``, a cProfile of the
whole (``PREFIX.pstats``) and its top functions (``PREFIX.txt``). Python 3.12's cProfile sees
every thread, so everything here runs in the main thread.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--preload", type=Path, help="an import record to import first")
    parser.add_argument("--out", type=Path, help="PREFIX for .json, .pstats and .txt")
    parser.add_argument(
        "--freeze", action="store_true", help="gc.freeze() after the imports, as a runner does"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="load-profile-")
    steps: list[tuple[str, float]] = []

    def timed(label: str, fn, *fn_args):
        start = time.perf_counter()
        result = fn(*fn_args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        steps.append((label, time.perf_counter() - start))
        return result

    start = time.perf_counter()
    if args.preload:
        from minifal.runner.import_record import read_record
        from minifal.runner.imports_preload import preload

        imported, failed = preload(read_record(args.preload))
        print(f"preloaded {imported} modules ({len(failed)} failed)")
    steps.append(("imports", time.perf_counter() - start))
    import torch

    from minifal.compiled.cache.torch_source_key import prime_torch_key
    from minifal.compiled.precompiled.artifact_files import ArtifactDir, load_artifact
    from minifal.compiled.precompiled.first_call import run_first_call
    from minifal.host.collector import freeze_survivors, pauses_timed

    if args.freeze:
        print(f"froze {freeze_survivors()} objects")
    collector = pauses_timed()
    pauses = collector.__enter__()
    profile = cProfile.Profile()
    profile.enable()
    if torch.cuda.is_available():
        timed("CUDA init", torch.cuda.init)
    timed("torch_key (stored)", prime_torch_key)
    if torch.cuda.is_available():
        from torch._inductor.runtime.triton_compat import triton_key
        from torch.utils._triton import triton_backend

        timed("triton_key", triton_key)
        backend = timed("triton backend", triton_backend)
        timed("triton backend hash", backend.hash)
    for meta, path in ArtifactDir(args.dir).listed():
        name = f"{meta.module_class.rsplit('.', 1)[-1]} {meta.signature_label.split()[0]}"
        artifact = timed(f"load {name}", load_artifact, path)
        if meta.input_layouts:
            timed(
                f"first call {name}",
                run_first_call,
                artifact,
                meta.input_layouts,
                meta.input_plan,
                meta.grad_enabled,
            )
    profile.disable()
    collector.__exit__(None, None, None)
    steps.append(("of which garbage collection", pauses.seconds))
    print(f"collections: {pauses.details()}")
    print(f"{'step':64} {'seconds':>8}")
    for label, seconds in steps:
        print(f"{label[:64]:64} {seconds:8.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "freeze": args.freeze,
                    "steps": steps,
                    **pauses.details(),
                },
                indent=1,
            )
        )
        profile.dump_stats(str(args.out.with_suffix(".pstats")))
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("cumulative").print_stats(120)
        stats.sort_stats("tottime").print_stats(60)
        args.out.with_suffix(".txt").write_text(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
