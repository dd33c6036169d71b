"""Scale to zero by suspension, then a request: how soon the first answer comes back, side by
side with a warm spawn (the runner stopped at scale-down and started again).

    python benchmarks/suspend_resume.py --cycles 10 --burst 8 --out suspend.json

Each mode runs its own fleet on one data dir: ``sleep`` (``minifal run APP --suspend on``, the
default ``--suspend-sleep``: a runner that offloaded its weights sleeps on its GPU before the
driver's checkpoint), ``suspend`` (``--suspend-sleep 0``: the driver's checkpoint at once),
``stop`` (``--suspend off``). A first request starts the runner; then, per cycle: wait until
the fleet has scaled to zero (the runner SUSPENDED, or gone), read the GPU memory its process
holds (``nvidia-smi``) and what ``/runners`` says it holds in host memory, send one request
with seed 0 and time the answer; every image is hashed (one seed, one hash). A last cycle sends
a burst of concurrent requests (seeds 1..N) into the resume: each must be answered once, with
its own seed.
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


def wait_scaled_to_zero(client: httpx.Client, url: str, suspend: bool) -> dict[str, Any] | None:
    """The suspended runner (suspend mode) or None once no runner is live."""
    deadline = time.monotonic() + SCALE_DOWN_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = runners(client, url)
        if not any(row["state"] in LIVE for row in rows):
            asleep = [row for row in rows if row["state"] == "SUSPENDED"]
            if asleep or not suspend:
                return asleep[0] if asleep else None
        time.sleep(0.1)
    raise TimeoutError("the fleet did not scale to zero")


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


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    suspend = mode != "stop"
    command = [sys.executable, "-m", "minifal.cli", "run", APP, "--port", str(args.port)]
    command += ["--data-dir", str(work / "data"), "--suspend", "on" if suspend else "off"]
    if mode == "suspend":
        command += ["--suspend-sleep", "0"]
    env = {**os.environ, "MINIFAL_SD_COMPILE": args.compile}
    url = f"http://127.0.0.1:{args.port}"
    log = (work / f"{mode}.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    cycles: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=600.0) as client:
            wait_ready(client, url, 0, process)  # the gateway answers; no runner yet
            first = generate(client, url, 0)
            for number in range(args.cycles if suspend else args.stop_cycles):
                asleep = wait_scaled_to_zero(client, url, suspend)
                memory = gpu_memory_mib(asleep["pid"] if asleep else None)
                held = asleep.get("suspensions", {}) if asleep else {}
                answer = generate(client, url, 0)
                cycles.append({"cycle": number + 1, **memory, "held": held, **answer})
                print(f"{mode} cycle {number + 1}: {answer['seconds']:.2f} s, {memory}", flush=True)
            burst = None
            if suspend and args.burst:
                wait_scaled_to_zero(client, url, suspend)
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
        "first_request_s": first["seconds"],
        "cycles": cycles,
        "median_s": statistics.median(seconds) if seconds else None,
        "max_s": max(seconds) if seconds else None,
        "same_image": len({first["image_sha256"], *(c["image_sha256"] for c in cycles)}) == 1,
        "burst": burst,
        "runners": [
            {k: row.get(k) for k in ("runner_id", "state", "suspensions")} for row in table
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=10, help="suspend/resume cycles")
    parser.add_argument("--stop-cycles", type=int, default=2, help="stop/spawn cycles")
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("--compile", default="none", help="MINIFAL_SD_COMPILE of both fleets")
    parser.add_argument(
        "--modes", nargs="+", choices=["sleep", "suspend", "stop"], default=["sleep", "stop"]
    )
    parser.add_argument("--port", type=int, default=8795)
    parser.add_argument("--work-dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="minifal-suspend-"))
    work.mkdir(parents=True, exist_ok=True)
    results = [run_mode(mode, args, work) for mode in args.modes]
    print(
        f"{'mode':8} {'first s':>8} {'median s':>9} {'max s':>7} {'GPU MiB':>8} {'host GiB':>9}"
        f" {'pinned GiB':>10} same image  burst"
    )
    for result in results:
        held = max((c.get("process_mib") or 0 for c in result["cycles"]), default=0)
        host = max((c["held"].get("host_memory_bytes") or 0 for c in result["cycles"]), default=0)
        pinned = max((c["held"].get("pinned_bytes") or 0 for c in result["cycles"]), default=0)
        print(
            f"{result['mode']:8} {result['first_request_s']:8.2f} {result['median_s'] or 0:9.2f}"
            f" {result['max_s'] or 0:7.2f} {held:8} {host / 2**30:9.2f} {pinned / 2**30:10.2f}"
            f" {result['same_image']!s:10}  {result['burst']}"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
