"""What batching loses outside the GPU: SD-Turbo's batched path with the GPU call replaced by a
sleep of its measured length (``benchmarks/apps/batched_images.py``), through the gateway.

    python benchmarks/batching_answer_path.py --out /tmp/answer_path
    python benchmarks/batching_answer_path.py --call-ms 1:22,16:160 --clients 16 --out /tmp/ap

For each mode (``--modes``: ``encode``, batches with each answer's PNG written in its request
thread as the app does; ``stored``, the same batches answering one image stored at setup, so no
PNG; ``single``, no batching, three requests at a time) it starts ``minifal run --workers 1``
and, for each number of clients (``--clients``), has every client post ``--per-client`` requests
back to back: images/s, p50 and p99. The "GPU only" column is what the sleeps alone allow (all
clients in one batch, or full batches of the largest size back to back): what a serving layer
that cost nothing would reach. The runner's batch sizes are from its ``batcher`` log line.
Prints a table and writes ``<out>/batching_answer_path.json``. CPU only; no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "benchmarks" / "apps" / "batched_images.py"
sys.path.insert(0, str(APP.parent))

from minifal.compat.fal_alias import install_fal_alias  # noqa: E402

install_fal_alias()  # the stand-in app's module holds the cost model; it imports fal

from batched_images import call_costs, call_seconds  # noqa: E402
from sd_turbo_batching import load_level  # noqa: E402  (the same clients, another body)

READY_TIMEOUT_S = 120.0
MODES = ("encode", "stored", "single")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gpu_only(clients: int, max_batch: int, points: list[tuple[int, float]]) -> float:
    """Images/s that the sleeps alone allow for ``clients`` closed-loop clients."""
    size = min(clients, max_batch)
    return size / call_seconds(size, points)


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / f"fleet-{mode}.log"
    command = [sys.executable, "-m", "minifal.cli", "run", str(APP), "--workers", "1"]
    command += ["--port", str(port), "--data-dir", str(work / mode)]
    env = {
        **os.environ,
        "BATCHED_IMAGES_MODE": mode,
        "BATCHED_IMAGES_MAX_BATCH": str(args.max_batch),
        "BATCHED_IMAGES_CALL_MS": args.call_ms,
    }
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    with log_path.open("wb") as log, httpx.Client(timeout=120.0, limits=limits) as client:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: not ready (see {log_path})")
                try:
                    if client.get(f"{url}/health").json().get("runners_ready", 0) >= 1:
                        break
                except (httpx.TransportError, ValueError):
                    pass
                time.sleep(0.2)
            for seed in range(10):
                client.post(f"{url}/", json={"prompt": "warm", "seed": seed}).raise_for_status()
            curve = []
            for clients in args.clients:
                level = load_level(client, url, clients, args.per_client)
                if mode != "single":
                    level["gpu_only_images_per_s"] = gpu_only(
                        clients, args.max_batch, call_costs(args.call_ms)
                    )
                curve.append(level)
                print(f"[{mode}] {json.dumps(level)}", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
    batches = re.findall(r"batcher \w+: (.*)", log_path.read_text("utf-8", "replace"))
    return {"mode": mode, "curve": curve, "batches": batches[-1] if batches else None}


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    points = call_costs(args.call_ms)
    head = " | ".join(f"{r['mode']} images/s | p50 ms | p99 ms" for r in results)
    print(f"\n| clients | GPU only images/s | {head} |")
    print("| ---: | ---: |" + " ---: | ---: | ---: |" * len(results))
    for i, clients in enumerate(args.clients):
        cells = " | ".join(
            f"{c['images_per_s']:.1f} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f}"
            for c in (r["curve"][i] for r in results)
        )
        print(f"| {clients} | {gpu_only(clients, args.max_batch, points):.1f} | {cells} |")
    for r in results:
        if r["batches"]:
            print(f"{r['mode']}: {r['batches']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for JSON and logs")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--clients", default="1,4,8,16,32")
    parser.add_argument("--per-client", type=int, default=12)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument(
        "--call-ms",
        default="1:20.6,2:32.4,4:56.9,8:95.3,16:145.2",
        help="the GPU call's ms by batch size (size:ms,...); default: an H200's (BENCHMARKS 14)",
    )
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected some of {MODES}")
    call_costs(args.call_ms)  # a bad --call-ms fails here, not in the runner
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="answer-path-") as scratch:
        for mode in modes:
            results.append(run_mode(mode, args, Path(scratch)))
            document = {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "argv": sys.argv,
                "cpu_count": os.cpu_count(),
                "call_ms": args.call_ms,
                "max_batch": args.max_batch,
                "results": results,
            }
            (args.out / "batching_answer_path.json").write_text(json.dumps(document, indent=2))
    print_table(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
