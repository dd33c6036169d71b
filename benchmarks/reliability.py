"""Reliability figures (issue 12): fuzzing, shutdown under load, queue flood, soak.

    python benchmarks/reliability.py fuzz      [--examples 100]  [--json out.json]
    python benchmarks/reliability.py shutdown  [--sync 48 --queued 200]
    python benchmarks/reliability.py flood     [--submits 10000 --max-queue 1000]
    python benchmarks/reliability.py soak      [--seconds 1200 --concurrency 64]
    python benchmarks/reliability.py all       (the short forms, as CI runs them)

Every server is a real ``minifal serve`` or ``minifal run`` on 127.0.0.1 (run it under
``unshare -rn`` to be sure nothing leaves the machine: the apps' inputs are ``data:`` URIs).
Each figure prints one line per measurement and returns a JSON-able dict; ``--json`` writes it.
RELIABILITY.md quotes the figures with the commands that made them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "benchmarks" / "reliability_apps"
READY_TIMEOUT_S = 90.0


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The server and its runner processes (the gateway's children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [self.process.pid, *map(int, children.read_text().split())]
        except OSError:
            return [self.process.pid]


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIFAL_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@contextmanager
def server(
    command: str, app: str, work_dir: Path, *extra: str, runners: int = 0
) -> Iterator[Server]:
    """``minifal serve|run APP`` on a free port until the block ends (SIGTERM, then SIGKILL)."""
    port = free_port()
    log_path = work_dir / f"{command}-{port}.log"
    arguments = [
        command,
        str(APPS / app),
        "--port",
        str(port),
        "--data-dir",
        str(work_dir / "data"),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "minifal.cli", *arguments, *extra],
            cwd=work_dir,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Server(process, port, log_path)
    try:
        wait_ready(running, runners)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(running: Server, runners: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{running.log()[-3000:]}")
            try:
                health = client.get(running.url + "/health")
                if health.status_code == 200 and health.json().get("runners_ready", 0) >= runners:
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.1)  # a bounded readiness poll
    raise RuntimeError(f"not ready in {READY_TIMEOUT_S} s:\n{running.log()[-3000:]}")


# -- fuzzing -----------------------------------------------------------------------------------

FUZZ_APPS = ("json_app.py", "image_app.py", "stream_app.py")
FUZZ_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


def schemathesis_run(base_url: str, examples: int, report_dir: Path) -> dict[str, Any]:
    """One ``schemathesis run`` against ``base_url``'s OpenAPI; its JSON report, summarised."""
    report = report_dir / f"st-{time.monotonic_ns()}.json"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        ",".join(FUZZ_CHECKS),
        "--max-examples",
        str(examples),
        "--seed",
        "12",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report:\n{completed.stdout[-3000:]}")
    data = json.loads(report.read_text())
    failures = data.get("failures") or []
    titles = Counter(str(f.get("title") or f.get("check") or f)[:120] for f in failures)
    server_errors = sum(count for title, count in titles.items() if "server error" in title.lower())
    return {
        "test_cases": data["test_cases"]["generated"],
        "operations": data["operations"]["tested"],
        "server_errors": server_errors,
        "schema_violations": len(failures) - server_errors,
        "tool_errors": len(data.get("errors") or []),
        "tool_error_titles": [str(e)[:200] for e in data.get("errors") or []],
        "failures": dict(titles),
        "exit_code": data.get("exit_code", completed.returncode),
    }


def fuzz(examples: int, work_dir: Path, apps: tuple[str, ...] = FUZZ_APPS) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for app in apps:
        for command, extra, runners in (("serve", (), 0), ("run", ("--workers", "1"), 1)):
            with server(command, app, work_dir, *extra, runners=runners) as running:
                summary = schemathesis_run(running.url, examples, work_dir)
                alive = running.process.poll() is None
            target = "runner" if command == "serve" else "gateway"
            summary["server_alive"] = alive
            results[f"{app}:{target}"] = summary
            print(
                f"fuzz {app:<15} {target:<8} cases {summary['test_cases']:>5}  "
                f"server errors {summary['server_errors']}  schema violations "
                f"{summary['schema_violations']}  schemathesis errors {summary['tool_errors']}",
                flush=True,
            )
    return {
        "examples_per_operation": examples,
        "checks": list(FUZZ_CHECKS),
        "targets": results,
        "server_errors": sum(r["server_errors"] for r in results.values()),
        "schema_violations": sum(r["schema_violations"] for r in results.values()),
        "test_cases": sum(r["test_cases"] for r in results.values()),
    }


# -- shutdown under load -------------------------------------------------------------------------


async def _sync_call(client: httpx.AsyncClient, url: str, seconds: float) -> str:
    try:
        response = await client.post(url + "/sleep", json={"seconds": seconds})
        return str(response.status_code)
    except httpx.ConnectError:
        return "refused"  # not accepted: the listener had closed
    except httpx.TransportError as exc:
        return f"dropped:{type(exc).__name__}"  # accepted but never answered


class WebhookReceiver:
    """Counts the webhooks POSTed to it (127.0.0.1, a thread): queued requests answered."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                receiver.statuses[body.get("status", "?")] += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 1024  # a burst of webhooks at shutdown
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _shutdown_burst(
    running: Server, sync: int, queued: int, seconds: float, hook: str
) -> dict:
    limits = httpx.Limits(max_connections=sync + 64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        submitted = await asyncio.gather(
            *(
                client.post(
                    running.url + "/queue/sleep",
                    params={"fal_webhook": hook},
                    json={"seconds": seconds},
                )
                for _ in range(queued)
            )
        )
        ids = [r.json()["request_id"] for r in submitted if r.status_code == 200]
        calls = [
            asyncio.ensure_future(_sync_call(client, running.url, seconds)) for _ in range(sync)
        ]
        await asyncio.sleep(1.0)  # the burst is in flight
        sigterm_at = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        outcomes = Counter(await asyncio.gather(*calls))
    exit_code = await asyncio.to_thread(running.process.wait, 300)
    return {
        "sync_outcomes": dict(outcomes),
        "queued_accepted": len(ids),
        "exit_s": round(time.monotonic() - sigterm_at, 2),
        "exit_code": exit_code,
        "queue_ids": ids,
    }


async def _kept_in_store(data_dir: Path, ids: list[str]) -> int:
    """Queued requests the stopped gateway left unanswered in its job store, for the next."""
    from minifal.fleet.job_store.sqlite import SqliteJobStore

    store = SqliteJobStore(data_dir / "queue")
    await store.open()
    try:
        stored = [await store.get(request_id) for request_id in ids]
    finally:
        await store.close()
    return sum(1 for request in stored if request is not None and request.status != "COMPLETED")


def shutdown(sync: int, queued: int, work_dir: Path) -> dict[str, Any]:
    """SIGTERM to the gateway while ``sync`` 1-second calls run and ``queued`` wait."""
    receiver = WebhookReceiver()
    with server("run", "json_app.py", work_dir, "--workers", "2", runners=2) as running:
        result = asyncio.run(_shutdown_burst(running, sync, queued, 2.0, receiver.url))
        log = running.log()
    receiver.close()
    if os.environ.get("RELIABILITY_KEEP_LOGS"):
        Path(os.environ["RELIABILITY_KEEP_LOGS"]).write_text(log)
    drained = [line for line in log.splitlines() if "draining" in line]
    grace = 10.0
    kept = asyncio.run(_kept_in_store(work_dir / "data", result["queue_ids"]))
    answered = sum(receiver.statuses.values())
    outcomes = result["sync_outcomes"]
    dropped = sum(n for k, n in outcomes.items() if k.startswith("dropped"))
    summary = {
        "sync_requests": sync,
        "sync_answered_200": outcomes.get("200", 0),
        "sync_refused_before_accept": outcomes.get("refused", 0),
        "sync_accepted_but_dropped": dropped,
        "sync_outcomes": outcomes,
        "queued_accepted": result["queued_accepted"],
        "queued_answered_by_webhook": dict(receiver.statuses),
        "queued_kept_in_store": kept,
        "queued_unanswered_at_exit": result["queued_accepted"] - answered - kept,
        "drain_log": drained[:1],
        "grace_s": grace,
        "sigterm_to_exit_s": result["exit_s"],
        "exit_code": result["exit_code"],
    }
    print(f"shutdown {json.dumps(summary)}", flush=True)
    return summary


# -- flood -------------------------------------------------------------------------------------


async def _flood(running: Server, submits: int, concurrency: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    retry_after_missing = 0
    ids: list[str] = []
    peak_rss = 0
    semaphore = asyncio.Semaphore(concurrency)

    async def submit(client: httpx.AsyncClient) -> None:
        nonlocal retry_after_missing
        async with semaphore:
            try:
                response = await client.post(running.url + "/queue/sleep", json={"seconds": 2.0})
            except httpx.TransportError as exc:
                statuses[type(exc).__name__] += 1
                return
        statuses[str(response.status_code)] += 1
        if response.status_code == 200:
            ids.append(response.json()["cancel_url"])
        elif response.status_code == 429 and "retry-after" not in response.headers:
            retry_after_missing += 1

    limits = httpx.Limits(max_connections=concurrency)
    gateway_pid = running.process.pid
    rss_before = rss_bytes(gateway_pid)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        tasks = [asyncio.ensure_future(submit(client)) for _ in range(submits)]
        while not all(task.done() for task in tasks):
            peak_rss = max(peak_rss, rss_bytes(gateway_pid))
            await asyncio.sleep(0.1)
        submit_s = time.monotonic() - started
        rss_after_submits = rss_bytes(gateway_pid)
        cancels: Counter[str] = Counter()

        async def cancel(cancel_url: str) -> None:
            async with semaphore:
                try:
                    response = await client.put(cancel_url)
                    cancels[str(response.status_code)] += 1
                except httpx.TransportError as exc:
                    cancels[type(exc).__name__] += 1

        started = time.monotonic()
        await asyncio.gather(*(cancel(cancel_url) for cancel_url in ids))
        cancel_s = time.monotonic() - started
        health = (await client.get(running.url + "/health")).status_code
    return {
        "submits": submits,
        "concurrency": concurrency,
        "submit_statuses": dict(statuses),
        "429_without_retry_after": retry_after_missing,
        "submit_s": round(submit_s, 2),
        "cancel_statuses": dict(cancels),
        "cancel_s": round(cancel_s, 2),
        "gateway_rss_mb_before": round(rss_before / 2**20, 1),
        "gateway_rss_mb_peak": round(max(peak_rss, rss_after_submits) / 2**20, 1),
        "gateway_alive": running.process.poll() is None,
        "health_after": health,
    }


def flood(submits: int, max_queue: int, work_dir: Path) -> dict[str, Any]:
    extra = ("--workers", "1", "--max-queue", str(max_queue))
    with server("run", "json_app.py", work_dir, *extra, runners=1) as running:
        summary = asyncio.run(_flood(running, submits, 64))
    summary["max_queue"] = max_queue
    print(f"flood {json.dumps(summary)}", flush=True)
    return summary


# -- soak --------------------------------------------------------------------------------------


async def _soak(running: Server, seconds: float, concurrency: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    samples: list[tuple[float, dict[int, int]]] = []
    stop_at = time.monotonic() + seconds
    started = time.monotonic()
    body = {"name": "soak", "points": [{"x": i, "y": -i} for i in range(20)], "tags": {"a": "b"}}

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            try:
                response = await client.post(running.url + "/", json=body)
                statuses[str(response.status_code)] += 1
            except httpx.TransportError as exc:
                statuses[type(exc).__name__] += 1

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            samples.append(
                (time.monotonic() - started, {pid: rss_bytes(pid) for pid in running.pids()})
            )
            await asyncio.sleep(max(0.5, seconds / 120))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(sampler(), *(worker(client) for _ in range(concurrency)))
    warm = [s for s in samples if s[0] >= 0.25 * seconds]
    growth: dict[str, float] = {}
    rss_mb: dict[str, list[float]] = {}
    for pid in warm[0][1] if warm else {}:
        values = [sample[1].get(pid, 0) for sample in warm if sample[1].get(pid)]
        if len(values) < 2:
            continue
        name = "gateway" if pid == running.process.pid else f"runner-pid-{pid}"
        growth[name] = round(100.0 * (values[-1] - values[0]) / values[0], 2)
        rss_mb[name] = [round(values[0] / 2**20, 1), round(values[-1] / 2**20, 1)]
    total = sum(statuses.values())
    errors = total - statuses.get("200", 0)
    return {
        "seconds": seconds,
        "concurrency": concurrency,
        "requests": total,
        "errors": errors,
        "statuses": dict(statuses),
        "requests_per_s": round(total / seconds, 1),
        "warm_up_s": round(0.25 * seconds, 1),
        "rss_mb_after_warm_up_and_at_end": rss_mb,
        "rss_growth_pct_after_warm_up": growth,
    }


def soak(seconds: float, concurrency: int, work_dir: Path) -> dict[str, Any]:
    with server("run", "json_app.py", work_dir, "--workers", "2", runners=2) as running:
        summary = asyncio.run(_soak(running, seconds, concurrency))
    print(f"soak {json.dumps(summary)}", flush=True)
    return summary


# -- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("figure", choices=["fuzz", "shutdown", "flood", "soak", "all"])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--sync", type=int, default=48)
    parser.add_argument("--queued", type=int, default=200)
    parser.add_argument("--submits", type=int, default=10_000)
    parser.add_argument("--max-queue", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=1200.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "command": " ".join(["python", "benchmarks/reliability.py", *(argv or sys.argv[1:])]),
    }
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        work_dir = Path(tmp)
        if args.figure in ("fuzz", "all"):
            results["fuzz"] = fuzz(args.examples if args.figure == "fuzz" else 10, work_dir)
        if args.figure in ("shutdown", "all"):
            results["shutdown"] = shutdown(args.sync, args.queued, work_dir)
        if args.figure in ("flood", "all"):
            results["flood"] = flood(args.submits, args.max_queue, work_dir)
        if args.figure in ("soak", "all"):
            seconds = args.seconds if args.figure == "soak" else 20.0
            results["soak"] = soak(seconds, args.concurrency, work_dir)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
