"""Scale to zero by suspension, then a request: how soon the first answer comes back, side by
side with a warm spawn (the runner stopped at scale-down and started again).

    python benchmarks/suspend_resume.py --modes sleep deep suspend --burst 8 --out suspend.json

Each mode runs its own fleet on one data dir: ``sleep`` (``minifal run APP --suspend on``, the
default ``--suspend-sleep``: a runner that offloaded its weights sleeps on its GPU before the
driver's checkpoint), ``deep`` (``--suspend-sleep --deep-sleep-s``, 3 s: each cycle waits until
the runner is checkpointed after its sleep, CUDA graphs released first, before it sends the
request), ``suspend`` (``--suspend-sleep 0``: graphs released, the driver's checkpoint at
once), ``stop`` (``--suspend off``). A first request starts the runner; then, per cycle: wait
until the fleet has scaled to zero (the runner SUSPENDED, or gone; ``deep``: and checkpointed),
read the GPU memory its process holds (``nvidia-smi``) and what ``/runners`` says it holds in
host memory, send one request with seed 0 and time the answer; every image is hashed (one
seed, one hash). A last cycle sends a burst of concurrent requests (seeds 1..N) into the
resume: each must be answered once, with its own seed.

Host memory held while suspended: the pinned copies of the weights (``pinned_bytes``) plus what
the driver's checkpoint added to the runner's resident memory (``checkpoint_bytes``), and its
whole resident memory (``host_memory_bytes``, which also counts what the process holds awake:
Python, libraries). The ratio divides the first by the arena's size, the live-tensor bytes the
benchmark can read from ``/runners`` (``pinned_bytes``: the App's parameters and buffers in
arenas; a plain-process count of SD-Turbo's live tensors was 2.45 GiB for its 2.40 GiB arena).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sd_turbo_fleet import wait_ready  # benchmarks/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
APP = f"{REPO / 'benchmarks' / 'apps' / 'sd_turbo_scale_to_zero.py'}::SDTurboScaleToZero"
LIVE = {"PENDING", "SETUP", "IDLE", "RUNNING", "RESUMING", "SUSPENDING"}
SCALE_DOWN_TIMEOUT_S = 120.0


def runners(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    return client.get(f"{url}/runners").json()["runners"]


def wait_scaled_to_zero(
    client: httpx.Client, url: str, suspend: bool, checkpointed: bool = False, timeout: float = 0
) -> dict[str, Any] | None:
    """The suspended runner (suspend modes) or None once no runner is live; ``checkpointed``:
    once the suspended runner no longer sleeps (its checkpoint after the sleep is done)."""
    deadline = time.monotonic() + (timeout or SCALE_DOWN_TIMEOUT_S)
    while time.monotonic() < deadline:
        rows = runners(client, url)
        if not any(row["state"] in LIVE for row in rows):
            suspended = [row for row in rows if row["state"] == "SUSPENDED"]
            if checkpointed:
                suspended = [r for r in suspended if not r.get("suspensions", {}).get("asleep")]
            if suspended or not suspend:
                return suspended[0] if suspended else None
        time.sleep(0.1)
    raise TimeoutError("the fleet did not scale to zero" + (" and checkpoint" * checkpointed))


def gpu_memory_mib(pid: int | None) -> dict[str, int]:
    """MiB held by ``pid`` on the GPUs and MiB used on the GPUs in all."""
    query = ["nvidia-smi", "--format=csv,noheader,nounits"]
    try:
        apps = subprocess.run(
            [*query, "--query-compute-apps=pid,used_memory"], capture_output=True, text=True
        ).stdout
        used = subprocess.run([*query, "--query-gpu=memory.used"], capture_output=True, text=True)
    except OSError:
        return {}
    mine = sum(
        int(memory)
        for owner, memory in (line.split(",") for line in apps.splitlines() if line.strip())
        if pid is not None and int(owner) == pid
    )
    return {"process_mib": mine, "gpus_used_mib": sum(int(v) for v in used.stdout.split())}


def generate(client: httpx.Client, url: str, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    response = client.post(f"{url}/", json={"prompt": "a fox", "seed": seed})
    seconds = time.perf_counter() - start
    response.raise_for_status()
    body = response.json()
    image = client.get(body["image"]["url"]).content
    return {
        "seconds": seconds,
        "seed": body["seed"],
        "image_sha256": hashlib.sha256(image).hexdigest(),
        "inference_s": body["timings"]["inference"],
    }


def fleet_command(mode: str, args: argparse.Namespace, work: Path) -> list[str]:
    """``minifal run`` for ``mode``."""
    suspend = mode != "stop"
    command = [sys.executable, "-m", "minifal.cli", "run", APP, "--port", str(args.port)]
    command += ["--data-dir", str(work / "data"), "--suspend", "on" if suspend else "off"]
    if mode == "suspend":
        command += ["--suspend-sleep", "0"]
    elif mode == "deep":
        command += ["--suspend-sleep", f"{args.deep_sleep_s:g}"]
    return command


def cycles_of(mode: str, args: argparse.Namespace) -> int:
    return {"stop": args.stop_cycles, "deep": args.deep_cycles}.get(mode, args.cycles)


def held_in_host_memory(held: dict[str, Any]) -> dict[str, Any]:
    """What ``/runners`` says a suspended runner holds, summed as the issue counts it."""
    pinned = held.get("pinned_bytes")
    checkpoint = held.get("checkpoint_bytes")
    parts = (pinned or 0) + (checkpoint or 0)
    return {
        "pinned_bytes": pinned,
        "checkpoint_bytes": checkpoint,
        "held_bytes": parts if pinned is not None or checkpoint is not None else None,
        "rss_bytes": held.get("host_memory_bytes"),
        "held_per_arena_byte": parts / pinned if pinned else None,
        "graphs_released": held.get("graphs_released"),
        "released_bytes": held.get("released_bytes"),
    }


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    suspend = mode != "stop"
    deep = mode == "deep"
    command = fleet_command(mode, args, work)
    env = {**os.environ, "MINIFAL_SD_COMPILE": args.compile}
    url = f"http://127.0.0.1:{args.port}"
    log = (work / f"{mode}.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    cycles: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=600.0) as client:
            wait_ready(client, url, 0, process)  # the gateway answers; no runner yet
            first = generate(client, url, 0)
            wait = SCALE_DOWN_TIMEOUT_S + (args.deep_sleep_s if deep else 0)
            for number in range(cycles_of(mode, args)):
                asleep = wait_scaled_to_zero(client, url, suspend, deep, wait)
                memory = gpu_memory_mib(asleep["pid"] if asleep else None)
                held = asleep.get("suspensions", {}) if asleep else {}
                answer = generate(client, url, 0)
                cycles.append(
                    {"cycle": number + 1, **memory, "held": held, **held_in_host_memory(held)}
                    | answer
                )
                print(f"{mode} cycle {number + 1}: {answer['seconds']:.2f} s, {memory}", flush=True)
            burst = None
            if suspend and args.burst:
                wait_scaled_to_zero(client, url, suspend, deep, wait)
                with ThreadPoolExecutor(args.burst) as pool:
                    answers = list(
                        pool.map(lambda s: generate(client, url, s), range(1, args.burst + 1))
                    )
                burst = {
                    "requests": args.burst,
                    "answered": len(answers),
                    "seeds_back": sorted(a["seed"] for a in answers),
                    "max_seconds": max(a["seconds"] for a in answers),
                }
            table = runners(client, url)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
    seconds = [cycle["seconds"] for cycle in cycles]
    return {
        "mode": mode,
        "command": command[2:],
        "first_request_s": first["seconds"],
        "cycles": cycles,
        "median_s": statistics.median(seconds) if seconds else None,
        "max_s": max(seconds) if seconds else None,
        **summary(cycles),
        "same_image": len({first["image_sha256"], *(c["image_sha256"] for c in cycles)}) == 1,
        "burst": burst,
        "runners": [
            {k: row.get(k) for k in ("runner_id", "state", "suspensions")} for row in table
        ],
    }


def summary(cycles: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode, the largest of each memory figure over its cycles (None: never reported)."""

    def largest(key: str) -> Any:
        values = [c[key] for c in cycles if c.get(key) is not None]
        return max(values) if values else None

    return {
        "gpu_mib_suspended": largest("process_mib"),
        **{
            key: largest(key)
            for key in (
                "pinned_bytes",
                "checkpoint_bytes",
                "held_bytes",
                "rss_bytes",
                "held_per_arena_byte",
                "graphs_released",
                "released_bytes",
            )
        },
    }


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"{'mode':8} {'n':>2} {'first s':>8} {'median s':>9} {'max s':>7} {'GPU MiB':>8}"
        f" {'pinned':>7} {'ckpt':>6} {'held':>6} {'x arena':>7} {'RSS':>6} {'graphs':>6}"
        f" {'freed':>6} same  burst"
    )
    for result in results:
        ratio = result["held_per_arena_byte"]
        gpu = result["gpu_mib_suspended"]
        print(
            f"{result['mode']:8} {len(result['cycles']):2} {result['first_request_s']:8.2f}"
            f" {result['median_s'] or 0:9.3f} {result['max_s'] or 0:7.3f}"
            f" {'-' if gpu is None else gpu:>8} {gib(result['pinned_bytes']):>7}"
            f" {gib(result['checkpoint_bytes']):>6} {gib(result['held_bytes']):>6}"
            f" {'-' if ratio is None else f'{ratio:.2f}':>7} {gib(result['rss_bytes']):>6}"
            f" {'-' if result['graphs_released'] is None else result['graphs_released']:>6}"
            f" {gib(result['released_bytes']):>6} {result['same_image']!s:5} {result['burst']}"
        )
    print(
        "first s: the request that starts the runner; median/max s: first answer after a scale"
        " to zero; GPU MiB: the runner's while suspended (nvidia-smi); GiB: pinned weights,"
        " what the checkpoint added (ckpt), held = pinned + ckpt, x arena = held / pinned (the"
        " arena's size stands for the live tensor bytes), RSS = the runner's whole resident"
        " memory; graphs / freed: CUDA graphs dropped and GPU GiB given back before the"
        " checkpoint; the largest over the cycles"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=10, help="cycles of sleep and suspend")
    parser.add_argument("--deep-cycles", type=int, default=5, help="cycles of deep")
    parser.add_argument("--stop-cycles", type=int, default=2, help="stop/spawn cycles")
    parser.add_argument(
        "--deep-sleep-s",
        type=float,
        default=3.0,
        help="deep: --suspend-sleep of the fleet (each cycle waits for the checkpoint after it)",
    )
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("--compile", default="none", help="MINIFAL_SD_COMPILE of every fleet")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["sleep", "deep", "suspend", "stop"],
        default=["sleep", "stop"],
    )
    parser.add_argument("--port", type=int, default=8795)
    parser.add_argument("--work-dir")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.deep_sleep_s <= 0:
        parser.error("--deep-sleep-s must be > 0 (0 is the suspend mode)")
    return args


def main() -> int:
    args = parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="minifal-suspend-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for mode in args.modes:
        results.append(run_mode(mode, args, work))
        if args.out:  # after each mode: a run cut short keeps what it measured
            report = {"date": time.strftime("%Y-%m-%d"), "arguments": vars(args)}
            Path(args.out).write_text(json.dumps({**report, "results": results}, indent=1))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
