"""A compile worker's time as it is and with its imports frozen out of the garbage collector.

    python benchmarks/compile_worker_collector.py --config tiny --repeats 1 --out PREFIX

Builds the SD-Turbo UNet (``apps/sd_turbo_configs/<config>``, random weights; fp16 on a GPU, fp32
on CPU), captures one call at 512x512 as a runner does, saves the job, and runs the compile
worker (``minifal/compiled/precompiled/compile_workers.py``) on it in fresh processes, each with
an empty Inductor cache dir: alternately as it is and with Inductor's imports frozen first
(``gc.freeze()``, as a runner does before ``setup()``). Prints each worker's last line (compile
seconds, of which garbage collection) and writes ``PREFIX.json``. The freeze saved 0.2-0.3 s, in
the noise of a compile, so workers do not freeze (BENCHMARKS.md section 5).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FROZEN = (
    "import sys; from minifal.host.collector import freeze_survivors; "
    "from minifal.compiled.precompiled.compile_workers import main; "
    "from torch._inductor import compile_fx, standalone_compile; "
    "freeze_survivors(); sys.exit(main(sys.argv[1:]))"
)


def capture_job(config: str, job: Path) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    from minifal.compiled.call_signature import flatten_call
    from minifal.compiled.precompiled.compile_workers import _save_job
    from minifal.compiled.precompiled.graph_compile import capture_call

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    unet_config = UNet2DConditionModel.load_config(
        REPO / "apps" / "sd_turbo_configs" / config / "unet"
    )
    unet = UNet2DConditionModel.from_config(unet_config).to(device, dtype).eval()
    latents = torch.randn(1, unet.config.in_channels, 64, 64, device=device, dtype=dtype)
    text = torch.randn(1, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    call = flatten_call(
        (latents, torch.tensor(999.0, device=device)),
        {"encoder_hidden_states": text, "return_dict": False},
    )
    with torch.no_grad():
        captured, _ = capture_call(unet, call)
    _save_job(captured, job)


def run_worker(job: Path, frozen: bool) -> dict:
    from minifal.compiled.precompiled.compile_workers import WORKER_CODE

    work = Path(tempfile.mkdtemp(prefix="worker-gc-"))
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    code = FROZEN if frozen else WORKER_CODE
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(job), str(work / "artifact.bin")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - start
    match = re.search(r"compiled in ([0-9.]+) s \(garbage collection ([0-9.]+) s\)", done.stdout)
    if done.returncode != 0 or not match:
        raise SystemExit(
            f"worker failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return {
        "frozen": frozen,
        "compile_s": float(match.group(1)),
        "gc_s": float(match.group(2)),
        "process_s": round(wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    job = Path(tempfile.mkdtemp(prefix="worker-job-")) / "unet.job"
    capture_job(args.config, job)
    runs = []
    print(f"{'imports frozen':>14} {'compile s':>10} {'of which GC s':>14} {'process s':>10}")
    for _ in range(args.repeats):
        for frozen in (False, True):
            run = run_worker(job, frozen)
            runs.append(run)
            print(
                f"{frozen!s:>14} {run['compile_s']:10.1f} {run['gc_s']:14.1f} "
                f"{run['process_s']:10.1f}",
                flush=True,
            )
    if args.out:
        import torch

        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(sys.argv),
            "torch": torch.__version__,
        }
        args.out.with_suffix(".json").write_text(
            json.dumps({**meta, "config": args.config, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
