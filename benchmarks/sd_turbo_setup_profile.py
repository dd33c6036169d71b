"""Where a warm SD-Turbo runner's setup() spends its time, thread by thread (CPU or GPU).

    python benchmarks/sd_turbo_setup_profile.py --data-dir /tmp/w/precompiled --out /tmp/p \
        --label warm --calls --sample-ms 5

Runs the app's ``setup()`` in this process, as a runner would (bytecode cache, fal alias), on a
data dir whose store is already warm (run ``sd_turbo_warm_start.py`` once first). ``--calls``
times every call of the wrapped modules and every CUDA graph capture (synchronizing around each,
so the warmup is a little slower than unprofiled); ``--sample-ms`` records every thread's Python
stack at that interval (``samples-LABEL.json``: a thread waiting for the GIL shows at the line it
waits on). Prints the calls as a table; writes ``probe-LABEL.json`` and the runner's startup
events (``events-LABEL.jsonl``) under ``--out``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class StackSampler:
    """Every thread's stack, every ``interval_s``, interned (a stack is stored once)."""

    def __init__(self, interval_s: float, origin: float) -> None:
        self.samples: list[tuple[float, str, int]] = []
        self.stacks: dict[str, int] = {}
        self._interval_s = interval_s
        self._origin = origin
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"samples": self.samples, "stacks": list(self.stacks)}

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            now = round(time.time() - self._origin, 4)
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == threading.get_ident():
                    continue
                stack = []
                while frame is not None and len(stack) < 80:
                    code = frame.f_code
                    where = code.co_filename.split("site-packages/")[-1]
                    stack.append(f"{where}:{code.co_name}:{frame.f_lineno}")
                    frame = frame.f_back
                key = "\n".join(reversed(stack))
                thread = names.get(ident, str(ident))
                self.samples.append((now, thread, self.stacks.setdefault(key, len(self.stacks))))


def time_calls(origin: float) -> list[tuple[str, str, float, float]]:
    """Wrap the module wrappers' calls and the graph captures with synchronized timers."""
    import torch

    from minifal.compiled import cuda_graphs
    from minifal.compiled.precompiled import module as precompiled_module

    calls: list[tuple[str, str, float, float]] = []

    def timed(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            torch.cuda.synchronize()
            start = time.time()
            result = original(self, *args, **kwargs)
            torch.cuda.synchronize()
            label = type(self._orig_mod).__name__ if name == "forward" else self._label
            seconds = round(time.time() - start, 4)
            calls.append((f"{cls.__name__}.{name}", label, round(start - origin, 3), seconds))
            return result

        setattr(cls, name, wrapper)

    timed(cuda_graphs.CudaGraphModule, "forward")
    timed(precompiled_module.PrecompiledModule, "forward")
    timed(cuda_graphs.GraphedCall, "_capture")
    return calls


def profile_loader() -> cProfile.Profile:
    """A cProfile of the artifact loader thread's load (store, artifacts, first calls)."""
    from minifal.compiled.precompiled.warm_loader import WarmLoader

    profile = cProfile.Profile()
    original = WarmLoader._load

    def load(self: Any) -> None:
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    WarmLoader._load = load  # type: ignore[method-assign]
    return profile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sample-ms", type=float, default=0.0, help="0: no stack samples")
    parser.add_argument("--calls", action="store_true", help="time module calls (a GPU only)")
    parser.add_argument(
        "--preload",
        type=Path,
        help="an import record (runner-imports/*.txt): import it first, like the fork server",
    )
    parser.add_argument(
        "--profile-loader", action="store_true", help="cProfile the artifact loader thread"
    )
    args = parser.parse_args()
    origin = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["MINIFAL_DATA_DIR"] = str(args.data_dir)
    os.environ["MINIFAL_EVENTS_FILE"] = str(args.out / f"events-{args.label}.jsonl")
    sampler = StackSampler(args.sample_ms / 1000, origin) if args.sample_ms else None
    if sampler:
        sampler.start()
    sys.path[:0] = [str(REPO), str(REPO / "apps")]
    from minifal.compat.fal_alias import install_fal_alias
    from minifal.compiled.bytecode_cache import enable_bytecode_cache

    enable_bytecode_cache(args.data_dir)
    install_fal_alias()
    logging.basicConfig(
        level=logging.INFO, format="%(relativeCreated)8.0f %(threadName)s %(message)s"
    )
    if args.preload:
        from minifal.runner.import_record import read_record
        from minifal.runner.imports_preload import preload

        begin = time.time()
        imported, failed = preload(read_record(args.preload))
        print(f"preloaded {imported} modules in {time.time() - begin:.1f} s ({len(failed)} failed)")
    calls = time_calls(origin) if args.calls else []
    loader_profile = profile_loader() if args.profile_loader else None
    import sd_turbo

    app = sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo)
    start = time.time()
    app.setup()
    setup_s = time.time() - start
    if sampler:
        (args.out / f"samples-{args.label}.json").write_text(json.dumps(sampler.stop()))
    result = {"label": args.label, "setup_s": setup_s, "ready_s": time.time() - origin}
    if loader_profile is not None:
        text = io.StringIO()
        stats = pstats.Stats(loader_profile, stream=text)
        stats.sort_stats("cumulative").print_stats(80)
        stats.sort_stats("tottime").print_stats(50)
        (args.out / f"loader-profile-{args.label}.txt").write_text(text.getvalue())
        loader_profile.dump_stats(str(args.out / f"loader-profile-{args.label}.pstats"))
    (args.out / f"probe-{args.label}.json").write_text(json.dumps({**result, "calls": calls}))
    print(f"{'call':28} {'module':40} {'at s':>7} {'seconds':>8}")
    for what, label, at, seconds in calls:
        print(f"{what:28} {label[:40]:40} {at:7.2f} {seconds:8.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
