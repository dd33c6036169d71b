"""Four apps on one GPU behind one gateway, requests rotating between them (issue 30).

    python benchmarks/app_rotation.py --suspension on off --duration 300 --out results/rot
    python benchmarks/app_rotation.py --cpu --suspension off --duration 90 --out /tmp/rot

Each ``--suspension`` mode starts ONE ``minifal run A B C D --gpus 0 --suspend on|off`` (its
own fleet, one data dir for all modes so compiled artifacts are shared), sends each app one
request (its cold start, reported apart), then rotates: the apps in turn, each for a slot of
``--switch-min`` to ``--switch-max`` seconds (uniform, seeded), one client sending requests back
to back to the slot's app (at least one a slot). Every answer must come from its own app:

- GPU (default): four SD-Turbo apps (``benchmarks/apps/sd_turbo_rotation.py``), each drawing
  every image from its own seed; the answer's seed must be its app's, and its image must be
  no image another app gave. Images an app gave that differ from its first are counted apart.
- ``--cpu``: four tiny apps (``benchmarks/apps/rotation_cpu.py``) that want a GPU each, on a
  pretend GPU ``0`` (the pool hands it out, nothing uses it); each answers its own name.
  ``--cpu-imports torch`` has them import modules in ``setup()``, standing in for a model's
  libraries (what each fork server imports, or each runner when its server lacks them).

Measured: requests, failures, wrong-app answers, the time to the first answer after each
switch (sending the new app's first request to its answer) and every request's latency;
every ``--sample-every`` seconds the GPU memory (``nvidia-smi``, against the card's total) and
the host memory of the gateway's processes (the gateway, its fork servers and runners: the sum
of their resident memory) and the machine's available memory; from the gateway's log, the
arbiter's actions (suspend, resume, start, stop), the suspend and resume times and each
switch's phases (the runner taken, its GPU let go, granted, the new one ready; also per app)
and the fork servers' preloads. Prints a table (modes side by side) and writes
``app_rotation_<cpu|gpu>_<modes>.json`` under ``--out``.

Long because it is one script to run in one device call: the fleet, the rotation, the answers'
checks, the memory sampler, the log's reading and the report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
GPU_APPS = [f"{REPO / 'benchmarks' / 'apps' / 'sd_turbo_rotation.py'}::SDTurbo{x}" for x in "ABCD"]
GPU_SEEDS = {"sd-turbo-a": 1, "sd-turbo-b": 2, "sd-turbo-c": 3, "sd-turbo-d": 4}
CPU_APPS = [f"{REPO / 'benchmarks' / 'apps' / 'rotation_cpu.py'}::Rotation{x}" for x in "ABCD"]
CPU_NAMES = [f"rotation-{x}" for x in "abcd"]
READY_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 120.0  # a stuck switch is a failure, not a hang
STOP_TIMEOUT_S = 120.0
STOP_RESERVE_S = 45.0
SCRIPT_START = time.monotonic()
LOG_ACTIONS = {
    "suspend": re.compile(r"\] suspending: "),
    "resume": re.compile(r"\] resuming on GPU "),
    "start": re.compile(r"\] starting on GPU "),
    "stop_for_gpu": re.compile(r"\] stopping: GPU for "),
    "stop_other": re.compile(r"\] stopping: (?!GPU for )"),
    "drain": re.compile(r"\] draining: "),
    "kill": re.compile(r"killing it"),
    "asleep": re.compile(r"\] asleep in "),
    "checkpoint_after_sleep": re.compile(r"\] checkpointed after "),
}
FLEET_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ minifal\.fleet: \[(?:[^/\]]+/)?([^\]]+)\] (.*)$"
)
TAKEN_FOR = re.compile(r"(?:stopping|suspending): GPU for ([^:]+):")
SUSPENDED_IN = re.compile(r"\] (?:suspended|asleep) in ([0-9.]+) s")  # asleep: no checkpoint yet
RESUMED_IN = re.compile(r"\] resumed in ([0-9.]+) s")
FORK_SERVER_LINE = re.compile(r"minifal\.fleet: (fork server (?:ready|of) .*)$", re.MULTILINE)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "max": max(values, default=None),
        "mean": statistics.fmean(values) if values else None,
    }


# -- what the machine holds ----------------------------------------------------------------------


def gpu_memory() -> list[dict[str, int]] | None:
    """Per GPU, MiB used and the card's total; None without ``nvidia-smi``."""
    command = ["nvidia-smi", "--query-gpu=index,memory.used,memory.total"]
    try:
        out = subprocess.run(
            [*command, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split(",") for line in out.splitlines() if line.strip()]
    return [{"gpu": int(i), "used_mib": int(u), "total_mib": int(t)} for i, u, t in rows]


def process_tree(root: int) -> set[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def resident_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """Samples GPU and host memory every ``every`` seconds until stopped."""

    def __init__(self, gateway_pid: int, every: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.gateway_pid = gateway_pid
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.done.is_set():
            pids = process_tree(self.gateway_pid)
            self.samples.append(
                {
                    "t": round(time.monotonic() - self.start_time, 2),
                    "gpus": gpu_memory(),
                    "processes": len(pids),
                    "tree_rss_mib": round(sum(resident_mib(pid) for pid in pids), 1),
                    "gateway_rss_mib": round(resident_mib(self.gateway_pid), 1),
                    "available_mib": round(available_mib(), 1),
                }
            )
            self.done.wait(self.every)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


def memory_summary(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Max GPU memory against the card's; host memory (the gateway's processes) at most, and in
    the rotation's first and last fifth (bounded: the last no higher than the first)."""
    gpu_used = [g["used_mib"] for s in samples if s["gpus"] for g in s["gpus"]]
    totals = [g["total_mib"] for s in samples if s["gpus"] for g in s["gpus"]]
    rotation = [s for s in samples if start <= s["t"] <= end]
    fifth = (end - start) / 5
    first = [s["tree_rss_mib"] for s in rotation if s["t"] <= start + fifth]
    last = [s["tree_rss_mib"] for s in rotation if s["t"] >= end - fifth]
    return {
        "samples": len(samples),
        "gpu_max_used_mib": max(gpu_used, default=None),
        "gpu_total_mib": min(totals, default=None),
        "gpu_over_card": any(u > t for u, t in zip(gpu_used, totals, strict=True)),
        "host_tree_rss_max_mib": max((s["tree_rss_mib"] for s in samples), default=None),
        "gateway_rss_first_last_mib": [
            rotation[0]["gateway_rss_mib"] if rotation else None,
            rotation[-1]["gateway_rss_mib"] if rotation else None,
        ],
        "host_tree_rss_first_fifth_max_mib": max(first, default=None),
        "host_tree_rss_last_fifth_max_mib": max(last, default=None),
        "host_available_min_mib": min((s["available_mib"] for s in samples), default=None),
        "processes_max": max((s["processes"] for s in samples), default=None),
    }


# -- requests ------------------------------------------------------------------------------------


class Checker:
    """Says whether an answer came from the app it was sent to."""

    def __init__(self, cpu: bool) -> None:
        self.cpu = cpu
        self.first_image: dict[str, str] = {}
        self.image_owner: dict[str, str] = {}
        self.images: dict[str, set[str]] = {}

    def payload(self, n: int) -> dict[str, Any]:
        return {"n": n} if self.cpu else {"prompt": "a fox in the snow", "seed": n}

    def check(self, client: httpx.Client, app: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.cpu:
            return {"wrong_app": body.get("app") != app, "pid": body.get("pid")}
        image = client.get(body["image"]["url"]).content
        digest = hashlib.sha256(image).hexdigest()
        owner = self.image_owner.setdefault(digest, app)
        self.first_image.setdefault(app, digest)
        self.images.setdefault(app, set()).add(digest)
        return {
            "wrong_app": body.get("seed") != GPU_SEEDS[app] or owner != app,
            "image_sha256": digest[:16],
            "image_changed": digest != self.first_image[app],
        }


def send(
    client: httpx.Client, url: str, app: str, n: int, checker: Checker, started: float
) -> dict[str, Any]:
    sent = time.monotonic()
    record: dict[str, Any] = {"app": app, "n": n, "sent": round(sent - started, 3)}
    try:
        response = client.post(f"{url}/local/{app}", json=checker.payload(n))
        record["seconds"] = time.monotonic() - sent
        record["status"] = response.status_code
        if response.status_code != 200:
            record["error"] = response.text[:300]
            return record
        record.update(checker.check(client, app, response.json()))
    except httpx.HTTPError as exc:
        record["seconds"] = time.monotonic() - sent
        record["error"] = f"{type(exc).__name__}: {exc}"
    return record


def rotate(
    client: httpx.Client,
    url: str,
    apps: list[str],
    args: argparse.Namespace,
    checker: Checker,
    started: float,
) -> list[dict[str, Any]]:
    """Slots of ``switch-min..switch-max`` s, the apps in turn; requests back to back."""
    slots = random.Random(args.seed)
    records: list[dict[str, Any]] = []
    end = time.monotonic() + args.duration
    if args.max_wall:  # leave the fleet's stop and the report their time within the wall
        end = min(end, SCRIPT_START + args.max_wall - STOP_RESERVE_S)
    slot, n = 0, len(apps)  # the cold starts sent 0..3
    while time.monotonic() < end:
        app = apps[slot % len(apps)]
        length = slots.uniform(args.switch_min, args.switch_max)
        slot_start = time.monotonic()
        first = True
        while first or time.monotonic() - slot_start < length:
            record = send(client, url, app, n, checker, started)
            record.update(slot=slot, first_after_switch=first)  # cold starts end on the last app
            records.append(record)
            n, first = n + 1, False
            if args.gap:
                time.sleep(args.gap)
        slot += 1
    return records


# -- one fleet -----------------------------------------------------------------------------------


def wait_gateway(client: httpx.Client, url: str, process: subprocess.Popen) -> float:
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"minifal run exited with {process.returncode}")
        try:
            if client.get(f"{url}/health").status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the gateway did not answer within {READY_TIMEOUT_S} s")


def arbiter_actions(log_text: str) -> dict[str, Any]:
    counts = {name: len(pattern.findall(log_text)) for name, pattern in LOG_ACTIONS.items()}
    suspends = [float(s) for s in SUSPENDED_IN.findall(log_text)]
    resumes = [float(s) for s in RESUMED_IN.findall(log_text)]
    return {**counts, "suspend_seconds": spread(suspends), "resume_seconds": spread(resumes)}


def switch_phases(log_text: str) -> dict[str, Any]:
    """Per switch, from the gateway's log: the runner taken back until it let go of the GPU
    (stopped or suspended), then until the asking app's runner was granted it (starting or
    resuming), then until that runner was ready."""
    events = []
    for line in log_text.splitlines():
        match = FLEET_LINE.match(line)
        if match:
            when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((when, match[2], match[3]))
    let_go, granted, ready = [], [], []
    ready_by_app: dict[str, list[float]] = {}
    for index, (taken_at, taken, message) in enumerate(events):
        wanted = TAKEN_FOR.match(message)
        if not wanted:
            continue
        later = events[index:]
        freed = next(
            (
                t
                for t, r, m in later
                if r == taken and m.endswith(("-> TERMINATED", "-> SUSPENDED"))
            ),
            None,
        )
        grant = next(
            (
                (t, r)
                for t, r, m in later
                if r.startswith(f"{wanted[1]}-runner")
                and m.startswith(("starting on", "resuming on"))
            ),
            None,
        )
        if freed is None or grant is None:
            continue
        up = next(
            (t for t, r, m in later if r == grant[1] and t >= grant[0] and m.endswith("-> IDLE")),
            None,
        )
        let_go.append(freed - taken_at)
        granted.append(grant[0] - freed)
        if up is not None:
            ready.append(up - grant[0])
            ready_by_app.setdefault(wanted[1], []).append(up - grant[0])
    return {
        "taken_to_let_go_s": spread(let_go),
        "let_go_to_granted_s": spread(granted),
        "granted_to_ready_s": spread(ready),
        "granted_to_ready_by_app_s": {app: spread(v) for app, v in sorted(ready_by_app.items())},
    }


def not_right(record: dict[str, Any]) -> bool:
    return record.get("status") != 200 or bool(record.get("wrong_app"))


def run_mode(suspension: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    apps_refs = CPU_APPS if args.cpu else GPU_APPS
    apps = CPU_NAMES if args.cpu else list(GPU_SEEDS)
    command = [sys.executable, "-m", "minifal.cli", "run", *apps_refs, "--port", str(args.port)]
    command += ["--data-dir", str(work / "data"), "--gpus", args.gpus, "--suspend", suspension]
    env = {**os.environ, "ROTATION_SETUP_SECONDS": str(args.setup_seconds)}
    env["ROTATION_IMPORTS"] = " ".join(args.cpu_imports)
    if not args.cpu:
        env.setdefault("MINIFAL_SD_COMPILE", args.compile)
    url = f"http://127.0.0.1:{args.port}"
    log_path = work / f"gateway_{suspension}.log"
    print(f"[{suspension}] {' '.join(command)}  (log {log_path})", flush=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    sampler = Sampler(process.pid, args.sample_every)
    checker = Checker(args.cpu)
    result: dict[str, Any] = {"suspension": suspension, "command": command}
    try:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            result["gateway_ready_s"] = round(wait_gateway(client, url, process), 2)
            sampler.start()
            started = sampler.start_time
            cold = [send(client, url, app, i, checker, started) for i, app in enumerate(apps)]
            print(
                f"[{suspension}] cold starts: "
                + ", ".join(f"{r['app']} {r['seconds']:.1f} s" for r in cold),
                flush=True,
            )
            rotation_start = time.monotonic() - started
            records = rotate(client, url, apps, args, checker, started)
            rotation_end = time.monotonic() - started
            runners = client.get(f"{url}/runners").json()["runners"]
    finally:
        if sampler.is_alive():
            sampler.stop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    result["exit_code"] = process.returncode
    log_text = log_path.read_text(errors="replace")
    answered = [r for r in records if r.get("status") == 200]
    failed = [r for r in records if r.get("status") != 200]
    firsts = [r for r in answered if r["first_after_switch"]]
    switches = [r["seconds"] for r in firsts]
    steady = [r["seconds"] for r in answered if not r["first_after_switch"]]
    result.update(
        duration_s=round(rotation_end - rotation_start, 1),
        cold_starts=cold,
        cold_failed=sum(1 for r in cold if r.get("status") != 200 or r.get("wrong_app")),
        requests=len(records),
        answered=len(answered),
        failed=len(failed),
        failures=failed[:20],
        wrong_app=sum(1 for r in answered if r.get("wrong_app")),
        requests_per_app={app: sum(1 for r in records if r["app"] == app) for app in apps},
        switches=sum(1 for r in records if r["first_after_switch"]),
        first_answer_after_switch_s=spread(switches),
        first_answer_after_switch_by_app_s={
            app: spread([r["seconds"] for r in firsts if r["app"] == app]) for app in apps
        },
        latency_all_s=spread([r["seconds"] for r in answered]),
        latency_within_slot_s=spread(steady),
        memory=memory_summary(sampler.samples, rotation_start, rotation_end),
        suspends_available="suspend: idle runners are suspended" in log_text,
        arbiter=arbiter_actions(log_text),
        switch_phases=switch_phases(log_text),
        fork_server_lines=FORK_SERVER_LINE.findall(log_text),
        runners_per_app={app: sum(1 for r in runners if r["alias"] == app) for app in apps},
        runner_states={
            state: sum(1 for r in runners if r["state"] == state)
            for state in sorted({r["state"] for r in runners})
        },
        # every switch's first request and every failed or wrong one (the rest: latency_*)
        records=[r for r in records if r["first_after_switch"] or not_right(r)],
        samples=sampler.samples,
    )
    if not args.cpu:
        result["images"] = {
            "distinct_per_app": {app: len(checker.images.get(app, ())) for app in apps},
            "changed_from_first": sum(1 for r in answered if r.get("image_changed")),
        }
    return result


# -- report --------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, Any]] = [
        ("suspension", lambda r: r["suspension"]),
        ("runners can suspend (gateway log)", lambda r: r["suspends_available"]),
        ("rotation seconds", lambda r: r["duration_s"]),
        ("requests", lambda r: r["requests"]),
        ("failed (cold starts failed)", lambda r: f"{r['failed']} ({r['cold_failed']})"),
        ("wrong app", lambda r: r["wrong_app"]),
        ("switches", lambda r: r["switches"]),
        ("first answer after switch p50 s", lambda r: r["first_answer_after_switch_s"]["p50"]),
        ("first answer after switch p90 s", lambda r: r["first_answer_after_switch_s"]["p90"]),
        ("first answer after switch max s", lambda r: r["first_answer_after_switch_s"]["max"]),
        ("latency within a slot p50 ms", lambda r: ms(r["latency_within_slot_s"]["p50"])),
        ("latency all p90 ms", lambda r: ms(r["latency_all_s"]["p90"])),
        ("GPU max used / total MiB", gpu_cell),
        ("host RSS max MiB (gateway tree)", lambda r: r["memory"]["host_tree_rss_max_mib"]),
        ("host RSS first / last fifth MiB", rss_cell),
        ("gateway RSS first / last MiB", gateway_cell),
        ("host available min MiB", lambda r: r["memory"]["host_available_min_mib"]),
        (
            "suspends / resumes (log)",
            lambda r: f"{r['arbiter']['suspend']} / {r['arbiter']['resume']}",
        ),
        (
            "starts / stops for a GPU (log)",
            lambda r: f"{r['arbiter']['start']} / {r['arbiter']['stop_for_gpu']}",
        ),
        ("resume p50 s (log)", lambda r: r["arbiter"]["resume_seconds"]["p50"]),
        ("suspend p50 s (log)", lambda r: r["arbiter"]["suspend_seconds"]["p50"]),
        ("switch: taken -> let go p50 s", lambda r: r["switch_phases"]["taken_to_let_go_s"]["p50"]),
        (
            "switch: let go -> granted p50 s",
            lambda r: r["switch_phases"]["let_go_to_granted_s"]["p50"],
        ),
        (
            "switch: granted -> ready p50 s",
            lambda r: r["switch_phases"]["granted_to_ready_s"]["p50"],
        ),
    ]
    for app in results[0]["first_answer_after_switch_by_app_s"]:
        rows += [
            (f"{app}: first answer after switch p50 s", by_app(app, "first_answer")),
            (f"{app}: granted -> ready p50 s", by_app(app, "ready")),
        ]
    width = max(len(name) for name, _ in rows)
    lines = []
    for name, cell in rows:
        cells = [fmt(cell(r)).rjust(16) for r in results]
        lines.append(f"{name.ljust(width)}  {'  '.join(cells)}")
    return "\n".join(lines)


def by_app(app: str, which: str) -> Any:
    def cell(result: dict[str, Any]) -> float | None:
        if which == "first_answer":
            return result["first_answer_after_switch_by_app_s"][app]["p50"]
        return result["switch_phases"]["granted_to_ready_by_app_s"].get(app, {}).get("p50")

    return cell


def gpu_cell(result: dict[str, Any]) -> str:
    memory = result["memory"]
    if memory["gpu_total_mib"] is None:
        return "no nvidia-smi"
    return f"{memory['gpu_max_used_mib']} / {memory['gpu_total_mib']}"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def gateway_cell(result: dict[str, Any]) -> str:
    first, last = result["memory"]["gateway_rss_first_last_mib"]
    return f"{fmt(first, 0)} / {fmt(last, 0)}"


def rss_cell(result: dict[str, Any]) -> str:
    memory = result["memory"]
    first, last = (
        memory["host_tree_rss_first_fifth_max_mib"],
        memory["host_tree_rss_last_fifth_max_mib"],
    )
    return f"{fmt(first, 0)} / {fmt(last, 0)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny CPU apps on a pretend GPU 0")
    parser.add_argument("--suspension", nargs="+", choices=["on", "off", "auto"], default=["on"])
    parser.add_argument("--duration", type=float, default=300.0, help="rotation seconds")
    parser.add_argument("--switch-min", type=float, default=1.0)
    parser.add_argument("--switch-max", type=float, default=2.0)
    parser.add_argument(
        "--max-wall",
        type=float,
        help="seconds for the whole script: the last rotation is cut short to end in time",
    )
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between requests")
    parser.add_argument("--seed", type=int, default=30, help="of the slots' lengths")
    parser.add_argument("--gpus", default="0")
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--sample-every", type=float, default=0.5)
    parser.add_argument("--setup-seconds", type=float, default=0.5, help="--cpu apps' setup")
    parser.add_argument(
        "--cpu-imports", nargs="*", default=[], help="modules the --cpu apps import in setup()"
    )
    parser.add_argument(
        "--compile", default="none", help="MINIFAL_SD_COMPILE (GPU; default eager, as section 6)"
    )
    parser.add_argument("--work-dir", type=Path, help="data dir and gateway logs (default: temp)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="app-rotation-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "cpu" if args.cpu else "gpu"
    path = args.out / f"app_rotation_{kind}_{'_'.join(args.suspension)}.json"
    results: list[dict[str, Any]] = []
    for suspension in args.suspension:
        load_before = os.getloadavg()
        results.append(run_mode(suspension, args, work))
        results[-1]["load_average_before_after"] = [load_before, os.getloadavg()]
        print("\n".join(results[-1]["fork_server_lines"]), flush=True)
        print(table(results[-1:]), flush=True)
        report = {
            "kind": kind,
            "gpu": gpu_name(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "modes": results,
        }
        path.write_text(json.dumps(report, indent=1))  # after each mode: a cut run keeps it
    print(f"\n{table(results)}\n\nJSON: {path}; gateway logs: {work}", flush=True)
    clean = all(r["failed"] + r["wrong_app"] + r["cold_failed"] == 0 for r in results)
    return 0 if clean else 1


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.strip() or None


if __name__ == "__main__":
    sys.exit(main())
