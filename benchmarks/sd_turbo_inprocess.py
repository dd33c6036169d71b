"""The SD-Turbo app in-process: time per image, per module, and images/s, per configuration.

    python benchmarks/sd_turbo_inprocess.py --data-dir /tmp/sdi --out inprocess.json \\
        eager+MINIFAL_SD_COMPILE=none+MINIFAL_SD_CUDA_GRAPHS=none \\
        precompiled+MINIFAL_SD_CUDA_GRAPHS=none  precompiled-graphs

Each configuration (``label+NAME=VALUE+...``: environment for the app) runs in a fresh process:
the app class is imported as ``minifal serve`` would, ``setup()`` runs (its warmup calls are
timed), then ``generate_image`` (prompt to PIL image, what the endpoint calls before encoding)
is timed back to back at 512x512, with each module's GPU time from CUDA events, then at 768x512,
then a loop of ``--loop`` images for images/s, then the PNG encoding of the output. The 512x512
image of seed 0 is compared with the first configuration's, pixel by pixel. Configurations share
the data dir, so artifacts compiled by one are loaded by the next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Timings of compiled code, and "ready" as before serving while compiling: a cold runner is
# ready once its artifacts are compiled (benchmarks/cold_start_serving.py measures the default).
COMPILED_ONLY = {"MINIFAL_SERVE_WHILE_COMPILING": "0"}
CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, {apps!r})
from minifal.compat.fal_alias import install_fal_alias
install_fal_alias()
import numpy as np
import torch
import sd_turbo
from minifal.toolkit.image.encoding import encode

app = sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo)
warmups = []
generate = app.generate_image
def timed(*args, **kwargs):
    start = time.perf_counter()
    result = generate(*args, **kwargs)
    warmups.append(time.perf_counter() - start)
    return result
app.generate_image = timed
start = time.perf_counter()
app.setup()
setup_s = time.perf_counter() - start
del app.generate_image
cuda = torch.cuda.is_available()
pipe = app.pipeline
modules = {{"text": pipe.text_encoder, "unet": pipe.unet, "vae": pipe.vae.decoder}}
marks = {{}}
def mark(name, edge):
    if cuda:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        marks[(name, edge)] = event
    else:
        marks[(name, edge)] = time.perf_counter()
for name, module in modules.items():
    module.register_forward_pre_hook(lambda m, a, n=name: mark(n, 0))
    module.register_forward_hook(lambda m, a, o, n=name: mark(n, 1))
def elapsed_ms(name):
    begin, end = marks[(name, 0)], marks[(name, 1)]
    return begin.elapsed_time(end) if cuda else (end - begin) * 1000

def series(width, height, n):
    totals, parts = [], {{k: [] for k in modules}}
    for seed in range(n):
        begin = time.perf_counter()
        image = app.generate_image("a red fox in the snow", width, height, seed)
        totals.append((time.perf_counter() - begin) * 1000)
        if cuda:
            torch.cuda.synchronize()
        for name in modules:
            parts[name].append(elapsed_ms(name))
    return totals, {{k: statistics.median(v) for k, v in parts.items()}}, image

series(512, 512, 5)
totals, parts, image = series(512, 512, {iters})
totals_768, parts_768, _ = series(768, 512, {iters})
begin = time.perf_counter()
for seed in range({loop}):
    app.generate_image("a red fox in the snow", 512, 512, seed)
images_per_s = {loop} / (time.perf_counter() - begin)
encode_ms = []
for _ in range(20):
    begin = time.perf_counter()
    encode(image, "png")
    encode_ms.append((time.perf_counter() - begin) * 1000)
reference = np.asarray(app.generate_image("a red fox in the snow", 512, 512, 0))
np.save({npy!r}, reference)
print("RESULT", json.dumps({{
    "setup_s": setup_s,
    "warmup_s": warmups[:2],
    "p50_ms": statistics.median(totals),
    "min_ms": min(totals),
    "modules_ms": parts,
    "p50_768_ms": statistics.median(totals_768),
    "modules_768_ms": parts_768,
    "images_per_s": images_per_s,
    "png_ms": statistics.median(encode_ms),
    "device": torch.cuda.get_device_name() if cuda else "cpu",
    "torch": torch.__version__,
}}))
"""


def run_configuration(label: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    environ = {**COMPILED_ONLY, **os.environ, **env, "MINIFAL_DATA_DIR": str(args.data_dir)}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    npy = args.data_dir / f"image-{label}.npy"
    code = CHILD.format(apps=str(REPO / "apps"), iters=args.iters, loop=args.loop, npy=str(npy))
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-6000:], file=sys.stderr)
        return {"label": label, "env": env, "error": done.stderr[-2000:]}
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return {"label": label, "env": env, "npy": str(npy), **json.loads(line.split(" ", 1)[1])}


def pixel_difference(a: str, b: str) -> int:
    import numpy as np

    return int(np.abs(np.load(a).astype(int) - np.load(b).astype(int)).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configurations", nargs="+", help="label+NAME=VALUE+...")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--loop", type=int, default=100, help="images in the images/s loop")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results = []
    header = (
        f"{'configuration':28} {'setup s':>8} {'warmups s':>11} {'text':>6} {'unet':>6} "
        f"{'vae':>6} {'512 p50':>8} {'768 p50':>8} {'img/s':>6} {'png':>5} {'diff':>4}"
    )
    print(header, flush=True)
    for spec in args.configurations:
        label, *pairs = spec.split("+")
        env = dict(pair.split("=", 1) for pair in pairs)
        result = run_configuration(label, env, args)
        results.append(result)
        if "error" in result:
            print(f"{label:28} failed", flush=True)
            continue
        first = next(r for r in results if "error" not in r)
        result["max_pixel_diff_vs_first"] = pixel_difference(first["npy"], result["npy"])
        parts = result["modules_ms"]
        warm = "/".join(f"{s:.2f}" for s in result["warmup_s"])
        print(
            f"{label:28} {result['setup_s']:8.2f} {warm:>11} {parts['text']:6.2f} "
            f"{parts['unet']:6.2f} {parts['vae']:6.2f} {result['p50_ms']:8.2f} "
            f"{result['p50_768_ms']:8.2f} {result['images_per_s']:6.1f} "
            f"{result['png_ms']:5.1f} {result['max_pixel_diff_vs_first']:4d}",
            flush=True,
        )
    if args.out:
        meta = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
