"""The SD-Turbo app as users run it: ``minifal run apps/sd_turbo.py --workers N``, measured.

Starts the fleet on an empty data dir, waits until every runner is ready, then over HTTP:
sequential 512x512 requests (p50/p95 latency) and concurrent requests (images/s). Ends with the
startup report (who compiled, who loaded; seconds per phase) and its PNG timeline.

    python benchmarks/sd_turbo_fleet.py --workers 2 --gpus 0,1 --out fleet.json --png fleet.png

``--ray ADDRESS`` places the runners on a Ray cluster (``benchmarks/ray_sd_turbo.py`` starts one
of two nodes on this machine and runs this script against it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# Timings of compiled code, and "ready" as before serving while compiling: a cold runner is
# ready once its artifacts are compiled (benchmarks/cold_start_serving.py measures the default).
COMPILED_ONLY = {"MINIFAL_SERVE_WHILE_COMPILING": "0"}
READY_TIMEOUT_S = 900.0


def wait_ready(client: httpx.Client, url: str, workers: int, process: subprocess.Popen) -> float:
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"minifal run exited with {process.returncode}")
        try:
            if client.get(f"{url}/health").json().get("runners_ready", 0) >= workers:
                return time.monotonic() - start
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"runners not ready within {READY_TIMEOUT_S} s")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--ray", metavar="ADDRESS", help="runners on this Ray cluster")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sd-fleet-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "minifal.cli", "run", str(REPO / "apps" / "sd_turbo.py")]
    command += ["--workers", str(args.workers), "--port", str(args.port)]
    command += ["--data-dir", str(data_dir)] + (["--gpus", args.gpus] if args.gpus else [])
    command += ["--ray", args.ray] if args.ray else []
    log_path = args.log or data_dir / "fleet.log"
    url = f"http://127.0.0.1:{args.port}"
    with log_path.open("wb") as log, httpx.Client(timeout=300.0) as client:
        environ = {**COMPILED_ONLY, **os.environ}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ)
        try:
            ready_s = wait_ready(client, url, args.workers, process)
            body = {"prompt": "a red fox in the snow", "width": 512, "height": 512}

            def one(seed: int) -> float:
                begin = time.perf_counter()
                response = client.post(f"{url}/", json={**body, "seed": seed})
                response.raise_for_status()
                return time.perf_counter() - begin

            sequential = [one(seed) for seed in range(args.requests)]
            begin = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                concurrent = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - begin
            runners = client.get(f"{url}/runners").json()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)

    png = args.png or data_dir / "startup.png"
    report_command = [sys.executable, "-m", "minifal.cli", "startup-report"]
    report_command += ["--data-dir", str(data_dir), "--png", str(png)]
    report = subprocess.run([*report_command, "--json"], capture_output=True, text=True, check=True)
    table = subprocess.run(report_command, capture_output=True, text=True, check=True).stdout
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(command),
        "workers": args.workers,
        "all_ready_s": ready_s,
        "sequential_ms": {
            "p50": statistics.median(sequential) * 1000,
            "p95": percentile(sequential, 0.95) * 1000,
            "n": len(sequential),
        },
        "concurrent": {
            "concurrency": args.concurrency,
            "n": len(concurrent),
            "images_per_s": len(concurrent) / wall,
            "p50_ms": statistics.median(concurrent) * 1000,
            "p95_ms": percentile(concurrent, 0.95) * 1000,
        },
        "runners": runners,
        "startup_report": json.loads(report.stdout),
    }
    print(table)
    print(f"all {args.workers} runners ready after {ready_s:.1f} s")
    seq = result["sequential_ms"]
    print(f"sequential 512x512 over HTTP: p50 {seq['p50']:.1f} ms, p95 {seq['p95']:.1f} ms")
    conc = result["concurrent"]
    print(
        f"concurrency {conc['concurrency']}: {conc['images_per_s']:.2f} images/s, "
        f"p50 {conc['p50_ms']:.1f} ms, p95 {conc['p95_ms']:.1f} ms"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    if args.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
