"""What the serving layer costs per request, side by side: one JSON echo endpoint served by
plain FastAPI (uvicorn), LitServe, ``minifal serve`` (one runner) and ``minifal run --workers 1``
(gateway + runner; ``max_multiplexing=1`` as fal's default, so one request at a time per runner,
and ``mux8`` with ``max_multiplexing=8``).

All servers run at once, idle but for the one being measured, and are measured in rounds, in a
different order each round, so that a busy moment of a shared machine hits them alike. Each round
and server: 20 warm-up requests, ``--requests`` sequential requests (p50, p95), then
``--requests`` from ``--concurrency`` client threads (requests/s). The table shows each figure's
median over the rounds. ``--baseline SRC`` adds ``minifal run`` from another source tree (say, a
``git worktree`` of the commit before a change) to the same run; ``--logging-echo`` adds an echo
that logs and prints one line per request (``minifal run logging``, and its baseline).

    python benchmarks/http_overhead.py --requests 300 --concurrency 8 --rounds 5 --out overhead.json
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PEERS = Path(__file__).resolve().parent / "peers"
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    command: list[str]
    url: str
    ready_url: str
    pythonpath: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def servers(data_dir: str, baseline: str | None, logging_echo: bool = False) -> list[Server]:
    python = sys.executable
    fal_app = str(PEERS / "echo_fal_app.py")
    logging_app = str(PEERS / "echo_fal_app_logging.py")
    multiplexed_app = str(PEERS / "echo_fal_app_multiplexed.py")
    minifal = [python, "-m", "minifal.cli"]

    def gateway(name: str, app: str, pythonpath: str = "") -> Server:
        port = free_port()
        command = [*minifal, "run", app, "--workers", "1", "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        data = str(Path(data_dir) / name.replace(" ", "-"))
        return Server(
            name, [*command, "--data-dir", data], f"{base}/", f"{base}/runners", pythonpath
        )

    ports = [free_port() for _ in range(3)]
    found = [
        Server(
            "fastapi",
            [python, "-m", "uvicorn", "echo_fastapi:app", "--port", str(ports[0])],
            f"http://127.0.0.1:{ports[0]}/",
            f"http://127.0.0.1:{ports[0]}/docs",
        ),
        Server(
            "litserve",
            [python, str(PEERS / "echo_litserve.py"), str(ports[1])],
            f"http://127.0.0.1:{ports[1]}/predict",
            f"http://127.0.0.1:{ports[1]}/health",
        ),
        Server(
            "minifal serve",
            [*minifal, "serve", fal_app, "--port", str(ports[2]), "--data-dir", data_dir],
            f"http://127.0.0.1:{ports[2]}/",
            f"http://127.0.0.1:{ports[2]}/health",
        ),
        gateway("minifal run", fal_app),
        gateway("minifal run mux8", multiplexed_app),
    ]
    for server in found[:1]:
        server.command += ["--log-level", "warning"]
    if baseline:
        found.append(gateway("minifal run (baseline)", fal_app, baseline))
    if logging_echo:
        found.append(gateway("minifal run logging", logging_app))
        if baseline:
            found.append(gateway("minifal run logging (baseline)", logging_app, baseline))
    return found


def wait_ready(client: httpx.Client, server: Server) -> None:
    assert server.process is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
        try:
            response = client.get(server.ready_url)
            if response.status_code == 200 and (
                not server.name.startswith("minifal run")
                or any(r["state"] == "IDLE" for r in response.json()["runners"])
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{server.name} not ready within {READY_TIMEOUT_S} s")


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


def start(server: Server) -> None:
    paths = [str(PEERS), server.pythonpath or os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    server.process = subprocess.Popen(
        server.command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=PEERS,
        start_new_session=True,  # its own process group: stopped whole, runners included
    )


def stop(server: Server) -> None:
    if server.process is not None and server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="a source tree whose `minifal run` is measured too")
    parser.add_argument("--only", nargs="*", help="server names to measure (default: all)")
    parser.add_argument(
        "--logging-echo",
        action="store_true",
        help="add `minifal run` of an echo that logs and prints a line per request (and its "
        "baseline): the cost of per-request log capture",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as data_dir, httpx.Client(timeout=2.0) as client:
        chosen = [
            s
            for s in servers(data_dir, args.baseline, args.logging_echo)
            if not args.only or s.name in args.only
        ]
        try:
            for server in chosen:
                start(server)
            for server in chosen:
                wait_ready(client, server)
            for number in range(args.rounds):
                shift = number % len(chosen)
                for server in chosen[shift:] + chosen[:shift]:
                    row = measure(server.url, args.requests, args.concurrency)
                    rounds.setdefault(server.name, []).append(row)
                print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for server in chosen:
                stop(server)
    summary = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in rounds.items()
    }
    reference = rounds.get("fastapi")
    print(
        f"{'server':<24} {'p50 ms':>8} {'p95 ms':>8} {'req/s @' + str(args.concurrency):>11}"
        f" {'p50 - fastapi':>14} {'req/s / fastapi':>16}"
    )
    for name, row in summary.items():
        line = (
            f"{name:<24} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['requests_per_s']:>11.0f}"
        )
        if reference:
            rows = rounds[name]
            pairs = list(zip(rows, reference, strict=True))
            added = statistics.median(r["p50_ms"] - f["p50_ms"] for r, f in pairs)
            ratio = statistics.median(r["requests_per_s"] / f["requests_per_s"] for r, f in pairs)
            row["p50_added_ms"], row["throughput_vs_fastapi"] = added, ratio
            line += f" {added:>14.2f} {ratio:>16.2f}"
        print(line)
    if args.out:
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} CPU cores",
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "results": summary,
            "per_round": rounds,
        }
        args.out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
