"""The queue's submit path, durable and not, side by side: ``POST /queue/...`` answered by a
``minifal run`` gateway whose job store is ``memory`` (today's in-memory queue: nothing kept),
``sqlite`` (the default: DATA_DIR/queue, WAL, batched writes) and, when ``redis-server`` is
installed, ``redis`` (a server started here on a loopback port, no persistence).

All gateways run at once (one runner each, serving a JSON echo; ``--max-queue 0``) and are
measured in rounds, in a different order each round, so that a busy moment of a shared machine
hits them alike. Each round and store: 20 warm-up submits, ``--requests`` sequential submits
(p50, p95 of the time to the answer), then ``--requests`` submits from ``--concurrency`` tasks
of one asyncio client (submits/s). The table shows each figure's median over the rounds, the
p50 each store adds to ``memory``'s (the difference of the medians, and ``paired``: the median
of each round's difference) and its submits/s as a ratio of ``memory``'s. A second
table times the submit route alone in this process (the forwarder's queue door behind an ASGI
client: no sockets, no runner, no other process), where what a store adds is not drowned in
the noise of a shared machine.

    python benchmarks/queue_submit.py --requests 400 --concurrency 16 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "benchmarks" / "peers" / "echo_fal_app.py"
RESULTS = ROOT / "benchmarks" / "results"
READY_TIMEOUT_S = 120.0
BODY = {"text": "hello"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Gateway:
    store: str
    spec: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(gateway: Gateway, work_dir: Path) -> None:
    data_dir = work_dir / gateway.store
    command = [sys.executable, "-m", "minifal.cli", "run", str(APP), "--workers", "1"]
    command += ["--port", str(gateway.port), "--data-dir", str(data_dir), "--max-queue", "0"]
    command += ["--queue-store", gateway.spec]
    log = (work_dir / f"{gateway.store}.log").open("wb")
    gateway.process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(gateway: Gateway) -> None:
    assert gateway.process is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if gateway.process.poll() is not None:
                raise RuntimeError(f"{gateway.store} gateway exited")
            try:
                if client.get(gateway.url + "/health").json().get("runners_ready", 0) >= 1:
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)  # back-off of a bounded readiness poll
    raise TimeoutError(f"{gateway.store} gateway not ready within {READY_TIMEOUT_S} s")


def stop(gateway: Gateway) -> None:
    if gateway.process is not None and gateway.process.poll() is None:
        os.killpg(gateway.process.pid, signal.SIGTERM)
        gateway.process.wait(timeout=90)


async def measure(url: str, requests: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def one() -> float:
            begin = time.perf_counter()
            response = await client.post("/queue/", json=BODY)
            response.raise_for_status()
            return time.perf_counter() - begin

        for _ in range(20):
            await one()
        sequential = sorted([await one() for _ in range(requests)])
        semaphore = asyncio.Semaphore(concurrency)

        async def bounded() -> None:
            async with semaphore:
                await one()

        begin = time.perf_counter()
        await asyncio.gather(*(bounded() for _ in range(requests)))
        wall = time.perf_counter() - begin
    return {
        "p50_ms": statistics.median(sequential) * 1000,
        "p95_ms": sequential[int(0.95 * (len(sequential) - 1))] * 1000,
        "submits_per_s": requests / wall,
    }


def start_redis(work_dir: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """A redis-server on a free loopback port (no persistence) and its URL, once it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    import redis

    port = free_port()
    arguments = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(work_dir)]
    process = subprocess.Popen(
        [binary, *arguments, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # back-off of a bounded readiness poll


async def in_process(spec: str, work_dir: Path, requests: int) -> dict[str, float]:
    """The submit route alone, in this process: the forwarder's queue door behind an ASGI
    client, no runner (requests stay queued), no sockets: what the store itself adds."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from minifal.fleet.forwarding import Forwarder
    from minifal.fleet.job_store.choice import job_store_for
    from minifal.fleet.job_store.rules import Retention
    from minifal.fleet.metrics import GatewayMetrics
    from minifal.fleet.scheduler import Scheduler
    from minifal.runner.app_manifest import AppManifest, ManifestEndpoint
    from minifal.settings import AppSettings

    manifest = AppManifest("app", "App", AppSettings(), (ManifestEndpoint("/", "http"),), {})
    scheduler = Scheduler(lambda: [], max_multiplexing=1)
    store = job_store_for(spec, work_dir / f"in-process-{spec.split(':')[0]}", Retention())
    await store.open()
    tasks: list[asyncio.Task[Any]] = []

    def spawn(coroutine: Any, name: str) -> asyncio.Task[Any]:
        tasks.append(asyncio.create_task(coroutine, name=name))
        return tasks[-1]

    async with httpx.AsyncClient() as runner_client:
        forwarder = Forwarder(
            manifest,
            scheduler,
            None,  # type: ignore[arg-type]  # no runner is ever reached
            GatewayMetrics(lambda: [], lambda: 0),
            None,  # type: ignore[arg-type]
            runner_client,
            spawn=spawn,
            store=store,
        )

        async def submit(request: Request) -> Response:
            return await forwarder.submit_queued(request, request.path_params["rest"])

        api = Starlette(routes=[Route("/queue/{rest:path}", submit, methods=["POST"])])

        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            times = []
            for _ in range(requests + 20):
                begin = time.perf_counter()
                response = await client.post("/queue/", json=BODY)
                times.append(time.perf_counter() - begin)
                assert response.status_code == 200, response.text
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await store.close()
    sequential = sorted(times[20:])
    return {
        "p50_ms": statistics.median(sequential) * 1000,
        "p95_ms": sequential[int(0.95 * (len(sequential) - 1))] * 1000,
    }


def summarize(gateways: list[Gateway]) -> dict[str, Any]:
    rows: dict[str, dict[str, float]] = {}
    for gateway in gateways:
        rows[gateway.store] = {
            name: round(statistics.median(r[name] for r in gateway.rounds), 3)
            for name in ("p50_ms", "p95_ms", "submits_per_s")
        }
    memory = rows["memory"]
    baseline = next(g for g in gateways if g.store == "memory").rounds
    for gateway in gateways:
        row = rows[gateway.store]
        row["p50_added_ms"] = round(row["p50_ms"] - memory["p50_ms"], 3)
        row["submits_per_s_ratio"] = round(row["submits_per_s"] / memory["submits_per_s"], 3)
        # Paired: each round's difference to memory's in the same round, then the median.
        row["p50_added_ms_paired"] = round(
            statistics.median(
                r["p50_ms"] - m["p50_ms"] for r, m in zip(gateway.rounds, baseline, strict=True)
            ),
            3,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "queue_submit_cpu.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="queue-submit-") as tmp:
        work_dir = Path(tmp)
        redis = start_redis(work_dir)
        gateways = [Gateway("memory", "memory"), Gateway("sqlite", "sqlite")]
        if redis is not None:
            gateways.append(Gateway("redis", redis[1]))
        try:
            for gateway in gateways:
                start(gateway, work_dir)
            for gateway in gateways:
                wait_ready(gateway)
            for round_index in range(args.rounds):
                shift = round_index % len(gateways)
                for gateway in gateways[shift:] + gateways[:shift]:
                    figures = asyncio.run(measure(gateway.url, args.requests, args.concurrency))
                    gateway.rounds.append(figures)
                    print(f"round {round_index + 1} {gateway.store:7} {json.dumps(figures)}")
        finally:
            for gateway in gateways:
                stop(gateway)
        in_process_rounds: dict[str, list[dict[str, float]]] = {g.store: [] for g in gateways}
        try:
            for _ in range(args.rounds):
                for gateway in gateways:
                    figures = asyncio.run(in_process(gateway.spec, work_dir, args.requests))
                    in_process_rounds[gateway.store].append(figures)
        finally:
            if redis is not None:
                redis[0].terminate()
                redis[0].wait(10)
    rows = summarize(gateways)
    in_process_rows = {
        store: {
            name: round(statistics.median(r[name] for r in rounds), 3)
            for name in ("p50_ms", "p95_ms")
        }
        for store, rounds in in_process_rounds.items()
    }
    for row in in_process_rows.values():
        row["p50_added_ms"] = round(row["p50_ms"] - in_process_rows["memory"]["p50_ms"], 3)
    header = ("store", "p50 ms", "p95 ms", "added p50", "paired", "submits/s", "ratio")
    print("\n{:8} {:>8} {:>8} {:>10} {:>7} {:>10} {:>6}".format(*header))
    for store, row in rows.items():
        print(
            f"{store:8} {row['p50_ms']:8.3f} {row['p95_ms']:8.3f} {row['p50_added_ms']:10.3f}"
            f" {row['p50_added_ms_paired']:7.3f} {row['submits_per_s']:10.0f}"
            f" {row['submits_per_s_ratio']:6.2f}"
        )
    print("\nin-process submit route (no sockets, no runner)")
    print("{:8} {:>8} {:>8} {:>10}".format("store", "p50 ms", "p95 ms", "added p50"))
    for store, row in in_process_rows.items():
        print(f"{store:8} {row['p50_ms']:8.3f} {row['p95_ms']:8.3f} {row['p50_added_ms']:10.3f}")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU cores",
        "command": "python benchmarks/queue_submit.py " + " ".join(sys.argv[1:]),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "stores": rows,
        "in_process": in_process_rows,
        "per_round": {g.store: g.rounds for g in gateways},
        "in_process_per_round": in_process_rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
