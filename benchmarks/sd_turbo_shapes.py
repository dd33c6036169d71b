"""How should the SD-Turbo app cover its warmup sizes? Cold and warm start, and step latency.

Each strategy runs in a fresh process twice: cold (empty Inductor cache dir) and warm (the same
dir reused, as a runner that loaded a published cache). Per run: pipeline load, compile + warmup
of 512x512 and 768x512, then the median latency of a 1-step generation at each warmup size and
at an uncovered size (640x640) after ``torch.compiler.set_stance("eager_on_recompile")``.

    python benchmarks/sd_turbo_shapes.py --weights random-full --out shapes-gpu.json     # GPU
    python benchmarks/sd_turbo_shapes.py --weights random-tiny --out shapes-cpu.json     # CPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARMUP_SIZES = ((512, 512), (768, 512))
UNCOVERED_SIZE = (640, 640)
STRATEGIES = ("regional", "static", "dynamic", "none")


def measure(strategy: str, weights: str, repeats: int) -> dict:
    """Child process: one runner's start with ``strategy``; returns the timings."""
    start = time.perf_counter()
    import torch

    sys.path.insert(0, str(REPO / "apps"))
    from sd_turbo_pipeline import load_sd_turbo_pipeline

    imported = time.perf_counter()
    pipeline = load_sd_turbo_pipeline(weights).pipeline
    device = pipeline.device
    loaded = time.perf_counter()

    def generate(width: int, height: int) -> float:
        begin = time.perf_counter()
        with torch.inference_mode():
            pipeline(
                prompt="a fox",
                width=width,
                height=height,
                num_inference_steps=1,
                guidance_scale=0.0,
                generator=torch.Generator(device=device).manual_seed(0),
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - begin

    if strategy == "regional":
        pipeline.unet.compile_repeated_blocks(fullgraph=True, dynamic=True)
    elif strategy in ("static", "dynamic"):
        pipeline.unet = torch.compile(pipeline.unet, dynamic=strategy == "dynamic")
    warmups = {f"{w}x{h}": generate(w, h) for w, h in WARMUP_SIZES}
    compiled = time.perf_counter()
    if strategy != "none":
        torch.compiler.set_stance("eager_on_recompile")
    latency = {}
    for width, height in (*WARMUP_SIZES, UNCOVERED_SIZE):
        generate(width, height)
        times = [generate(width, height) for _ in range(repeats)]
        latency[f"{width}x{height}"] = statistics.median(times) * 1000
    return {
        "strategy": strategy,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "import_s": imported - start,
        "load_s": loaded - imported,
        "compile_warmup_s": compiled - loaded,
        "warmup_s": warmups,
        "latency_ms": latency,
    }


def run_child(strategy: str, weights: str, repeats: int, cache_dir: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, "TRITON_CACHE_DIR": cache_dir}
    command = [sys.executable, __file__, "--child", strategy, "--weights", weights]
    command += ["--repeats", str(repeats)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        return {"strategy": strategy, "error": completed.stderr[-2000:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default="random-full")
    parser.add_argument("--strategies", default="regional,static,none")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.weights, args.repeats)))
        return 0

    results = []
    for strategy in args.strategies.split(","):
        with tempfile.TemporaryDirectory(prefix=f"shapes-{strategy}-") as cache_dir:
            for phase in ("cold", "warm"):
                result = run_child(strategy, args.weights, args.repeats, cache_dir)
                result["phase"] = phase
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
                if args.out:  # after each run: a time limit still leaves what was measured
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    record = {"date": time.strftime("%Y-%m-%d"), "results": results}
                    args.out.write_text(json.dumps(record, indent=2))

    sizes = [f"{w}x{h}" for w, h in (*WARMUP_SIZES, UNCOVERED_SIZE)]
    header = f"{'strategy':<10} {'start':<5} {'compile+warmup s':>17} " + " ".join(
        f"{size + ' ms':>12}" for size in sizes
    )
    print(header)
    for result in results:
        if "error" in result:
            print(f"{result['strategy']:<10} {result['phase']:<5} error: {result['error'][-200:]}")
            continue
        cells = " ".join(f"{result['latency_ms'][size]:>12.1f}" for size in sizes)
        name, phase, seconds = result["strategy"], result["phase"], result["compile_warmup_s"]
        print(f"{name:<10} {phase:<5} {seconds:>17.1f} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
