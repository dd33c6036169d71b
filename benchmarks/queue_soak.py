"""A queue soak: a steady rate of queue submits to one ``minifal run`` gateway for
``--seconds``, sampling every ``--sample-every`` seconds the job store's size (SQLite: the
database, its WAL and body files under DATA_DIR/queue; Redis: ``used_memory``), the
gateway's RSS, the requests waiting and answered. With retention short enough to be reached
(``--retention``, seconds), both should be flat after the warm-up.

    python benchmarks/queue_soak.py --seconds 3600 --rate 50 --retention 60
    python benchmarks/queue_soak.py --seconds 120 --rate 40 --retention 30 --queue-store redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "benchmarks" / "peers" / "echo_fal_app.py"
RESULTS = ROOT / "benchmarks" / "results"
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def directory_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # forgotten while we looked
                total += (Path(root) / name).stat().st_size
    return total


def store_bytes(spec: str, data_dir: Path) -> int:
    if spec.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(spec.split("?")[0], socket_timeout=5)
        try:
            return int(client.info("memory")["used_memory"])
        finally:
            client.close()
    if spec.startswith("sqlite:///"):
        return directory_bytes(Path(spec.removeprefix("sqlite://").split("?")[0]))
    return directory_bytes(data_dir / "queue")


async def soak(args: argparse.Namespace, url: str, pid: int, data_dir: Path) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    ids: list[str] = []
    samples: list[dict[str, Any]] = []
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def submit(index: int) -> None:
            begin = time.perf_counter()
            try:
                response = await client.post("/queue/", json={"text": f"soak {index}"})
            except httpx.TransportError as exc:
                statuses[type(exc).__name__] += 1
                return
            latencies.append(time.perf_counter() - begin)
            statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                ids.append(response.json()["request_id"])

        async def sample(at: float) -> None:
            health = (await client.get("/health")).json()
            row = {
                "t_s": round(at, 1),
                "submitted": sum(statuses.values()),
                "waiting": health["queue_size"],
                "store_bytes": await asyncio.to_thread(store_bytes, args.queue_store, data_dir),
                "gateway_rss_bytes": rss_bytes(pid),
            }
            samples.append(row)
            print(
                f"{row['t_s']:8.1f} {row['submitted']:10d} {row['waiting']:8d}"
                f" {row['store_bytes'] / 2**20:10.2f} {row['gateway_rss_bytes'] / 2**20:9.1f}",
                flush=True,
            )

        print(f"{'t s':>8} {'submitted':>10} {'waiting':>8} {'store MiB':>10} {'RSS MiB':>9}")
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        next_sample = 0.0
        index = 0
        while (now := time.monotonic() - start) < args.seconds:
            if now >= next_sample:
                await sample(now)
                next_sample += args.sample_every
            while index < now * args.rate:
                task = asyncio.create_task(submit(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        await sample(time.monotonic() - start)
        # The last requests must be answered, each with its own result.
        checked = Counter()
        for request_id in ids[-20:]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = (await client.get(f"/queue/local/x/requests/{request_id}/status")).json()
                if status["status"] == "COMPLETED":
                    break
                await asyncio.sleep(0.2)
            result = await client.get(f"/queue/local/x/requests/{request_id}")
            checked[str(result.status_code)] += 1
    warm = [s for s in samples if s["t_s"] >= args.seconds / 4]
    return {
        "statuses": dict(statuses),
        "last_results_checked": dict(checked),
        "submit_p50_ms": round(statistics.median(latencies) * 1000, 3) if latencies else None,
        "store_bytes_after_warmup": {
            "min": min(s["store_bytes"] for s in warm),
            "max": max(s["store_bytes"] for s in warm),
        },
        "gateway_rss_after_warmup": {
            "min": min(s["gateway_rss_bytes"] for s in warm),
            "max": max(s["gateway_rss_bytes"] for s in warm),
        },
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=40.0, help="submits per second")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--retention", type=float, default=30.0, help="--queue-retention")
    parser.add_argument("--queue-store", default="sqlite")
    parser.add_argument("--out", type=Path, default=RESULTS / "queue_soak_cpu.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="queue-soak-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        command = [sys.executable, "-m", "minifal.cli", "run", str(APP), "--workers", "1"]
        command += ["--port", str(port), "--data-dir", str(data_dir), "--max-queue", "0"]
        command += ["--queue-store", args.queue_store, "--queue-retention", str(args.retention)]
        with (Path(tmp) / "gateway.log").open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            with httpx.Client(timeout=2.0) as client:
                while True:
                    try:
                        if client.get(url + "/health").json().get("runners_ready", 0) >= 1:
                            break
                    except (httpx.TransportError, ValueError):
                        pass
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the gateway did not become ready")
                    time.sleep(0.2)  # back-off of a bounded readiness poll
            figures = asyncio.run(soak(args, url, process.pid, data_dir))
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=90)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores",
        "command": "python benchmarks/queue_soak.py " + " ".join(sys.argv[1:]),
        **figures,
    }
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
