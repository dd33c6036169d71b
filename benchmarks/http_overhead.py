"""What the serving layer costs per request, side by side: one JSON echo endpoint served by
plain FastAPI (uvicorn), LitServe, ``minifal serve`` (one runner) and ``minifal run --workers 1``
(gateway + runner; ``max_multiplexing=1`` as fal's default, so one request at a time per runner,
and ``mux8`` with ``max_multiplexing=8``). One server process each (plus the runner behind
minifal's gateway), started and measured one after the other in this run.

    python benchmarks/http_overhead.py --requests 300 --concurrency 8 --out overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

PEERS = Path(__file__).resolve().parent / "peers"
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def servers(port: int, data_dir: str) -> dict[str, tuple[list[str], str, str]]:
    """name -> (command, URL of the endpoint, URL that answers when ready)."""
    base = f"http://127.0.0.1:{port}"
    python = sys.executable
    fal_app = str(PEERS / "echo_fal_app.py")
    multiplexed_app = str(PEERS / "echo_fal_app_multiplexed.py")
    minifal = [python, "-m", "minifal.cli"]

    def gateway(app: str) -> list[str]:
        return [*minifal, "run", app, "--workers", "1", "--port", str(port), "--data-dir", data_dir]

    return {
        "fastapi": (
            [
                python,
                "-m",
                "uvicorn",
                "echo_fastapi:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            f"{base}/",
            f"{base}/docs",
        ),
        "litserve": (
            [python, str(PEERS / "echo_litserve.py"), str(port)],
            f"{base}/predict",
            f"{base}/health",
        ),
        "minifal serve": (
            [*minifal, "serve", fal_app, "--port", str(port), "--data-dir", data_dir],
            f"{base}/",
            f"{base}/health",
        ),
        "minifal run": (gateway(fal_app), f"{base}/", f"{base}/runners"),
        "minifal run mux8": (gateway(multiplexed_app), f"{base}/", f"{base}/runners"),
    }


def wait_ready(client: httpx.Client, url: str, name: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            response = client.get(url)
            if response.status_code == 200 and (
                not name.startswith("minifal run")
                or any(r["state"] == "IDLE" for r in response.json()["runners"])
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{name} not ready within {READY_TIMEOUT_S} s")


def measure(url: str, requests: int, concurrency: int) -> dict[str, float]:
    with httpx.Client(timeout=30.0) as client:

        def one(index: int) -> float:
            begin = time.perf_counter()
            response = client.post(url, json={"text": f"hello {index}"})
            response.raise_for_status()
            return time.perf_counter() - begin

        for index in range(20):
            one(index)
        sequential = sorted(one(index) for index in range(requests))
        begin = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        wall = time.perf_counter() - begin
    return {
        "p50_ms": statistics.median(sequential) * 1000,
        "p95_ms": sequential[int(0.95 * (len(sequential) - 1))] * 1000,
        "requests_per_s": requests / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as data_dir, httpx.Client(timeout=2.0) as client:
        for name in servers(0, data_dir):
            # A fresh port each: a server's worker processes may outlive it for a moment.
            command, url, ready_url = servers(free_port(), data_dir)[name]
            if name == "litserve":
                try:
                    import litserve  # noqa: F401
                except ImportError:
                    print("litserve is not installed: skipped", file=sys.stderr)
                    continue
            env = {
                **os.environ,
                "PYTHONPATH": f"{PEERS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            }
            process = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=PEERS,
                start_new_session=True,  # its own process group: stopped whole, workers included
            )
            try:
                wait_ready(client, ready_url, name, process)
                results[name] = measure(url, args.requests, args.concurrency)
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
    print(f"{'server':<14} {'p50 ms':>8} {'p95 ms':>8} {'req/s @' + str(args.concurrency):>12}")
    for name, row in results.items():
        print(
            f"{name:<14} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['requests_per_s']:>12.0f}"
        )
    if args.out:
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "requests": args.requests,
            "concurrency": args.concurrency,
            "results": results,
        }
        args.out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
