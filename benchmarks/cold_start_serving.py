"""A cold fleet under load: how soon it answers, and how it switches to compiled code.

Starts ``minifal run apps/sd_turbo.py --workers N`` on an empty data dir while clients send
512x512 requests from the first second on (each waits until the gateway listens), and reads each
runner's startup events as they are written. It measures, from the command's start:

- the first image (the first answered request);
- each runner's ready time (its ``ready`` event);
- where each runner's start went: its process start, ``setup()``, the precompiled block's open
  and its store load's start;
- each call signature's switch to compiled code (``precompiled.switch`` events; with today's
  wait-for-compiled behaviour there are none: compiled is ready);
- when compiled speed is reached: from the events (the last switch) and from the load (the first
  time after which a rolling median of the latencies stays within 20% of the final median);
- failed requests (an error status or a dropped connection once the gateway listens);
- the same image eager and compiled: seed 0's first and last images, largest pixel difference.

It stops ``--tail-s`` seconds after every runner is ready and has its ``precompiled`` summary
(the background compile is over), or at ``--max-s``. ``--wait-for-compiled`` measures the old
behaviour (``MINIFAL_SERVE_WHILE_COMPILING=0``), ``--repo`` runs another checkout's code.

    python benchmarks/cold_start_serving.py --workers 2 --gpus 0,1 --out results/cold
    python benchmarks/cold_start_serving.py --workers 1 --wait-for-compiled --out results/cold-old

Prints a table and writes ``cold_start_serving.json`` (and the fleet's log) under ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BODY = {"prompt": "a red fox in the snow", "width": 512, "height": 512}
SEEDS = 4  # requests cycle through seeds 0..3: seed 0 recurs, eager and compiled
SLOW_FACTOR = 1.2  # "compiled speed": a rolling median within 20% of the final one
ROLLING = 5


@dataclass
class Answer:
    client: int
    seed: int
    sent: float  # seconds since the command started
    latency: float
    status: int  # 0: the connection failed
    image_url: str | None = None
    error: str = ""


class Load:
    """``clients`` threads, each sending one request after another (``interval`` apart)."""

    def __init__(self, url: str, clients: int, interval: float, t0: float) -> None:
        self.url, self.clients, self.interval, self.t0 = url, clients, interval, t0
        self.answers: list[Answer] = []
        self.listening_at: float | None = None  # the gateway's first answer of any kind
        self.seed0_images: list[bytes] = []  # the first and the latest image of seed 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=600)

    def _client(self, index: int) -> None:
        count = 0
        with httpx.Client(timeout=900.0) as client:
            while not self._stop.is_set():
                if self.listening_at is None and not self._listening(client):
                    self._stop.wait(0.2)
                    continue
                seed = count % SEEDS
                count += 1
                sent = time.time()
                answer = Answer(index, seed, sent - self.t0, 0.0, 0)
                try:
                    response = self._post(client, seed)
                    answer.status = response.status_code
                    if response.status_code == 200:
                        answer.image_url = response.json()["image"]["url"]
                        if seed == 0:
                            self._keep_seed0(client.get(answer.image_url).content)
                    else:
                        answer.error = response.text[:200]
                except httpx.HTTPError as exc:
                    answer.error = f"{type(exc).__name__}: {exc}"
                answer.latency = time.time() - sent
                with self._lock:
                    self.answers.append(answer)
                self._stop.wait(self.interval)

    def _keep_seed0(self, image: bytes) -> None:
        with self._lock:
            self.seed0_images[1:] = [image]
            if len(self.seed0_images) == 1:  # the first one stays first
                self.seed0_images.append(image)

    def _post(self, client: httpx.Client, seed: int) -> httpx.Response:
        return client.post(f"{self.url}/", json={**BODY, "seed": seed})

    def _listening(self, client: httpx.Client) -> bool:
        try:
            client.get(f"{self.url}/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        with self._lock:
            if self.listening_at is None:
                self.listening_at = time.time() - self.t0
        return True


def runner_events(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every runner's events of this run (one run in a fresh data dir)."""
    events: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((data_dir / "runs").glob("*/runner-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            events.setdefault(path.stem, []).append(event)
    return events


def first_start(events: list[dict[str, Any]], phase: str, t0: float) -> float | None:
    """When the first ``phase`` of a runner began (its start line or its end line)."""
    starts = [e["start"] - t0 for e in events if e["phase"] == phase]
    return round(min(starts), 2) if starts else None


def settled(events: dict[str, list[dict[str, Any]]], workers: int) -> bool:
    """Every runner ready, its precompiled block summed up (no background compile left)."""
    done = [
        name
        for name, evs in events.items()
        if any(e["phase"] == "ready" for e in evs) and any(e["phase"] == "precompiled" for e in evs)
    ]
    return len(done) >= workers


def compiled_speed_at(answers: list[Answer], tail_from: float) -> tuple[float | None, float]:
    """When the rolling median latency came within SLOW_FACTOR of the tail's median, and that
    median (seconds)."""
    ok = sorted((a for a in answers if a.status == 200), key=lambda a: a.sent + a.latency)
    tail = [a.latency for a in ok if a.sent >= tail_from]
    if not tail:
        return None, float("nan")
    target = statistics.median(tail) * SLOW_FACTOR
    reached = None
    for i in range(len(ok)):
        window = [a.latency for a in ok[max(0, i - ROLLING + 1) : i + 1]]
        if statistics.median(window) <= target:
            reached = reached if reached is not None else ok[i].sent + ok[i].latency
        else:
            reached = None
    return reached, statistics.median(tail)


def image_difference(images: list[bytes]) -> int | None:
    """The largest per-channel difference (0-255) of the first and the last image; None
    without two images or without Pillow."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return None
    if len(images) < 2:
        return None
    first, last = (Image.open(io.BytesIO(image)).convert("RGB") for image in images[:2])
    return max(high for _, high in ImageChops.difference(first, last).getextrema())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--clients", type=int, default=2, help="steady load: clients in a loop")
    parser.add_argument(
        "--interval", type=float, default=0.0, help="seconds between a client's requests"
    )
    parser.add_argument("--tail-s", type=float, default=20.0, help="load after the last compile")
    parser.add_argument("--max-s", type=float, default=900.0)
    parser.add_argument("--wait-for-compiled", action="store_true", help="the old behaviour")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose code runs")
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary dir")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="cold-start-"))
    if any(data_dir.glob("*")):
        parser.error(f"--data-dir {data_dir} is not empty: a cold start needs an empty one")
    command = [sys.executable, "-m", "minifal.cli", "run", str(args.repo / "apps" / "sd_turbo.py")]
    command += ["--workers", str(args.workers), "--port", str(args.port)]
    command += ["--data-dir", str(data_dir)] + (["--gpus", args.gpus] if args.gpus else [])
    path = [str(args.repo), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    if args.wait_for_compiled:
        environ["MINIFAL_SERVE_WHILE_COMPILING"] = "0"
    url = f"http://127.0.0.1:{args.port}"
    log_path = args.out / "fleet.log"
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.time()
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # in the repo: ``-m`` puts the working dir first on the path
            command, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=args.repo
        )
        load = Load(url, args.clients, args.interval, t0)
        load.start()
        settled_at = None
        try:
            while time.time() - t0 < args.max_s:
                if process.poll() is not None:
                    raise RuntimeError(f"minifal run exited with {process.returncode}")
                if settled_at is None and settled(runner_events(data_dir), args.workers):
                    settled_at = time.time() - t0
                if settled_at is not None and time.time() - t0 >= settled_at + args.tail_s:
                    break
                time.sleep(0.5)
        finally:
            load.stop()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)

    events = runner_events(data_dir)
    runners = {}
    for name, evs in sorted(events.items()):
        ready = [e["start"] - t0 for e in evs if e["phase"] == "ready"]
        switches = [
            {
                "at_s": round(e["end"] - t0, 2),
                "module": e["details"].get("module"),
                "signature": e["details"].get("signature"),
                "source": e["details"].get("source"),
                "switched": e["details"].get("switched"),
                "max_abs_diff": e["details"].get("max_abs_diff"),
            }
            for e in evs
            if e["phase"] == "precompiled.switch"
        ]
        summary = [e for e in evs if e["phase"] == "precompiled"]
        runners[name] = {
            "ready_s": round(ready[0], 2) if ready else None,
            "switches": switches,
            "compiled_s": round(summary[0]["end"] - t0, 2) if summary else None,
            # where its start went: the process, setup(), the precompiled block's open (known
            # once the block is summed up, after its switchover) and its store load's start
            "process_start_s": first_start(evs, "process_start", t0),
            "setup_start_s": first_start(evs, "setup", t0),
            "block_open_s": first_start(evs, "precompiled", t0),
            "store_load_start_s": first_start(evs, "compile_cache.load", t0),
        }
    answers = load.answers
    failed = [a for a in answers if a.status != 200]
    ok = [a for a in answers if a.status == 200]
    first_image = min((a.sent + a.latency for a in ok), default=None)
    tail_from = (settled_at or args.max_s) + 1.0
    speed_at, tail_p50 = compiled_speed_at(answers, tail_from)
    switch_times = [s["at_s"] for r in runners.values() for s in r["switches"] if s["switched"]]
    compiled_by_events = max(
        [*switch_times, *(r["ready_s"] or 0 for r in runners.values())], default=None
    )
    first_switch = min(switch_times, default=None)
    eager = [a.latency for a in ok if first_switch is None or a.sent + a.latency < first_switch]
    seed0 = [a for a in sorted(ok, key=lambda a: a.sent) if a.seed == 0 and a.image_url]
    difference = image_difference(load.seed0_images)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(command),
        "mode": "wait-for-compiled" if args.wait_for_compiled else "serve-while-compiling",
        "load_average_before": uptime,
        "clients": args.clients,
        "interval_s": args.interval,
        "gateway_listening_s": load.listening_at,
        "first_image_s": None if first_image is None else round(first_image, 2),
        "runners": runners,
        "all_ready_s": max((r["ready_s"] or float("inf") for r in runners.values()), default=None),
        "settled_s": settled_at,
        "compiled_speed_by_events_s": compiled_by_events,
        "compiled_speed_by_latency_s": None if speed_at is None else round(speed_at, 2),
        "tail_p50_ms": round(tail_p50 * 1000, 1),
        # answered before any signature switched (eager; with --wait-for-compiled: compiled)
        "before_first_switch_p50_ms": round(statistics.median(eager) * 1000, 1) if eager else None,
        "requests": len(answers),
        "failed": len(failed),
        "failures": [asdict(a) for a in failed[:20]],
        "seed0_eager_vs_last_max_pixel_diff": difference,
        "seed0_first_sent_s": round(seed0[0].sent, 2) if seed0 else None,
        "seed0_last_sent_s": round(seed0[-1].sent, 2) if seed0 else None,
        "answers": [asdict(a) for a in answers],
    }
    (args.out / "cold_start_serving.json").write_text(json.dumps(result, indent=2))
    print(f"{result['mode']}, {args.workers} runner(s), {args.clients} client(s), load {uptime}")
    print(f"  gateway listening   {load.listening_at} s")
    print(f"  first image         {result['first_image_s']} s")
    for name, runner in runners.items():
        print(
            f"  {name} ready        {runner['ready_s']} s; "
            f"compiled (summary) {runner['compiled_s']} s"
        )
        print(
            f"    process start {runner['process_start_s']} s, setup {runner['setup_start_s']} s, "
            f"block open {runner['block_open_s']} s, store load {runner['store_load_start_s']} s"
        )
        for switch in runner["switches"]:
            state = "switched" if switch["switched"] else "stayed eager"
            print(f"    {switch['module']} {switch['signature']}: {state} at {switch['at_s']} s")
    print(
        f"  compiled speed      {compiled_by_events} s (events), "
        f"{result['compiled_speed_by_latency_s']} s (latency)"
    )
    print(f"  before first switch p50 {result['before_first_switch_p50_ms']} ms")
    print(f"  tail p50            {result['tail_p50_ms']} ms")
    print(f"  requests            {len(answers)}, failed {len(failed)}")
    print(f"  seed 0 first vs last image: max pixel difference {difference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
