"""SD-Turbo through the gateway, batching on and off: the throughput curve and the same pixels.

    python benchmarks/sd_turbo_batching.py --data-dir /tmp/sdb --out batching.json --inprocess \\
        after  before+MINIFAL_SD_BATCH_SIZES=1 \\
        eager+MINIFAL_SD_COMPILE=none+MINIFAL_SD_BATCH_SIZES=1+curve=no

Each configuration (``label+NAME=VALUE+...``: environment for the app; ``curve=no`` skips the
curve) starts ``minifal run apps/sd_turbo.py --workers 1`` on the shared data dir (so the first
configuration compiles, the next ones load), then over HTTP at 512x512, one step:

1. sequential requests (p50/p99);
2. the curve: for each number of clients (``--clients``), ``--per-client`` requests each, all
   clients posting back to back: images/s, p50 and p99 latency;
3. pixels: seeds 1000.. requested one at a time, then the same seeds among ``--burst``
   concurrent requests (which batch): the largest pixel difference (0-255) between the two, and
   between each configuration's lone images and the first configuration's.

``--inprocess`` first times the app's pipeline call in-process at each batch size (each module's
GPU time from CUDA events); with an empty data dir it is the one that compiles. Prints tables and
writes JSON (``--out``, rewritten after each configuration).

``--inprocess-each`` times it before each configuration's fleet instead, with that
configuration's environment (its compiles, its setup time and the Inductor seconds of each
graph it compiled are reported too); ``--fresh-data-dirs`` gives each configuration its own
empty data dir, ``<data dir>/<label>``. Before and after ``MINIFAL_SD_MAX_AUTOTUNE=vae``, sharing
one store (the UNet's artifacts are the same; the VAE decoder's tuned ones are its own)::

    MINIFAL_PRECOMPILED_WORKERS=6 python benchmarks/sd_turbo_batching.py --data-dir /tmp/sdb \\
        --inprocess-each --clients 16,32 --out autotune.json \\
        before+MINIFAL_SD_BATCH_SIZES=1,16 \\
        after+MINIFAL_SD_BATCH_SIZES=1,16+MINIFAL_SD_MAX_AUTOTUNE=vae
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# Timings of compiled code, and "ready" as before serving while compiling: a cold runner is
# ready once its artifacts are compiled (benchmarks/cold_start_serving.py measures the default).
COMPILED_ONLY = {"MINIFAL_SERVE_WHILE_COMPILING": "0"}
READY_TIMEOUT_S = 900.0
BODY = {"prompt": "a red fox in the snow", "width": 512, "height": 512}
PIXEL_SEEDS = range(1000, 1008)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def parse_configuration(spec: str) -> tuple[str, dict[str, str], bool]:
    label, *pairs = spec.split("+")
    env = dict(pair.split("=", 1) for pair in pairs)
    curve = env.pop("curve", "yes") != "no"
    return label, env, curve


class Fleet:
    """``minifal run apps/sd_turbo.py --workers 1`` with the configuration's environment."""

    def __init__(
        self, label: str, env: dict[str, str], data_dir: Path, args: argparse.Namespace
    ) -> None:
        self.url = f"http://127.0.0.1:{args.port}"
        self.log_path = args.log_dir / f"fleet-{label}.log"
        command = [sys.executable, "-m", "minifal.cli", "run", str(REPO / "apps" / "sd_turbo.py")]
        command += ["--workers", "1", "--port", str(args.port), "--data-dir", str(data_dir)]
        command += ["--gpus", args.gpus] if args.gpus else []
        self.command = " ".join(command)
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**COMPILED_ONLY, **os.environ, **env},
        )

    def wait_ready(self, client: httpx.Client) -> float:
        start = time.monotonic()
        while time.monotonic() - start < READY_TIMEOUT_S:
            if self._process.poll() is not None:
                raise RuntimeError(f"minifal run exited with {self._process.returncode}")
            try:
                if client.get(f"{self.url}/health").json().get("runners_ready", 0) >= 1:
                    return time.monotonic() - start
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"runner not ready within {READY_TIMEOUT_S} s")

    def stop(self) -> None:
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=30)
        self._log.close()

    def batch_summary(self) -> str | None:
        """The runner's last ``batcher generate_batch: ...`` line (logged when it stops)."""
        lines = re.findall(
            r"batcher generate_batch: (.*)", self.log_path.read_text("utf-8", "replace")
        )
        return lines[-1] if lines else None


def post(client: httpx.Client, url: str, seed: int) -> tuple[float, dict]:
    begin = time.perf_counter()
    response = client.post(f"{url}/", json={**BODY, "seed": seed})
    response.raise_for_status()
    return time.perf_counter() - begin, response.json()


def pixels(client: httpx.Client, answer: dict) -> np.ndarray:
    response = client.get(answer["image"]["url"])
    response.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


def load_level(client: httpx.Client, url: str, clients: int, per_client: int) -> dict:
    """``clients`` threads, each posting ``per_client`` requests back to back."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one_client(index: int) -> None:
        for k in range(per_client):
            seconds, _ = post(client, url, seed=index * 100_000 + k)
            with lock:
                latencies.append(seconds)

    begin = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - begin
    return {
        "clients": clients,
        "n": len(latencies),
        "images_per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def run_configuration(label: str, env: dict[str, str], curve: bool, data_dir: Path, args) -> dict:
    fleet = Fleet(label, env, data_dir, args)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    result: dict = {"label": label, "env": env, "command": fleet.command}
    with httpx.Client(timeout=300.0, limits=limits) as client:
        try:
            result["ready_s"] = fleet.wait_ready(client)
            print(f"[{label}] ready after {result['ready_s']:.1f} s", flush=True)
            for seed in range(10):  # the first requests of a fresh runner
                post(client, fleet.url, seed)
            sequential = [post(client, fleet.url, seed)[0] for seed in range(args.sequential)]
            result["sequential_ms"] = {
                "p50": statistics.median(sequential) * 1000,
                "p99": percentile(sequential, 0.99) * 1000,
                "n": len(sequential),
            }
            print(f"[{label}] sequential p50 {result['sequential_ms']['p50']:.1f} ms", flush=True)
            if curve:
                result["curve"] = []
                for clients in args.clients:
                    level = load_level(client, fleet.url, clients, max(args.per_client, 3))
                    result["curve"].append(level)
                    print(f"[{label}] {json.dumps(level)}", flush=True)
            alone = [pixels(client, post(client, fleet.url, seed)[1]) for seed in PIXEL_SEEDS]
            seeds = [*PIXEL_SEEDS, *range(2000, 2000 + args.burst - len(PIXEL_SEEDS))]
            with ThreadPoolExecutor(len(seeds)) as pool:
                answers = list(pool.map(lambda s: post(client, fleet.url, s)[1], seeds))
            together = [pixels(client, answer) for answer in answers[: len(PIXEL_SEEDS)]]
            result["batched_vs_alone_max_diff"] = max(
                int(np.abs(a - b).max()) for a, b in zip(alone, together, strict=True)
            )
            result["_alone"] = alone
        finally:
            fleet.stop()
    result["batches"] = fleet.batch_summary()
    result["log"] = str(fleet.log_path)
    return result


INPROCESS = r"""
import json, logging, statistics, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
sys.path.insert(0, {apps!r})
from minifal.compat.fal_alias import install_fal_alias
install_fal_alias()
import torch
import sd_turbo
app = sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo)
begin = time.perf_counter()
app.setup()
setup_s = time.perf_counter() - begin
pipe = app.pipeline
modules = {{"text": pipe.text_encoder, "unet": pipe.unet, "vae": pipe.vae.decoder}}
marks = {{}}
def mark(name, edge):
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    marks[(name, edge)] = event
for name, module in modules.items():
    module.register_forward_pre_hook(lambda m, a, n=name: mark(n, 0))
    module.register_forward_hook(lambda m, a, o, n=name: mark(n, 1))
rows = []
for batch in app.batch_sizes:
    calls, parts = [], {{k: [] for k in modules}}
    for k in range({iters}):
        begin = time.perf_counter()
        app.generate_pixels(["a red fox in the snow"] * batch, list(range(batch)), 512, 512)
        calls.append((time.perf_counter() - begin) * 1000)
        torch.cuda.synchronize()
        for name in modules:
            parts[name].append(marks[(name, 0)].elapsed_time(marks[(name, 1)]))
    call = statistics.median(calls)
    rows.append({{"batch": batch, "call_ms": call, "ms_per_image": call / batch,
                  "images_per_s": 1000 * batch / call,
                  "modules_ms": {{k: statistics.median(v) for k, v in parts.items()}}}})
    print("ROW", json.dumps(rows[-1]), flush=True)
print("RESULT", json.dumps({{"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                            "setup_s": setup_s, "rows": rows}}))
"""
# artifact_store.py's line for each graph it compiled (and saved)
COMPILED_LINE = re.compile(
    r"(?:^|\s)precompiled (\w+) (.+?): compiled \(Dynamo ([0-9.]+) s, Inductor ([0-9.]+) s\)",
    re.MULTILINE,
)


def run_inprocess(
    args: argparse.Namespace, data_dir: Path, env: dict[str, str] | None = None, label: str = ""
) -> dict:
    """The app's setup() and its pipeline call per batch size in one process, with ``env``."""
    environ = {**COMPILED_ONLY, **os.environ, **(env or {}), "MINIFAL_DATA_DIR": str(data_dir)}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    code = INPROCESS.format(apps=str(REPO / "apps"), iters=args.iters)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=environ,
            capture_output=True,
            text=True,
            check=False,
            timeout=READY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        return {"error": f"timed out: {error}"}
    log_name = f"inprocess-{label}.log" if label else "inprocess.log"
    (args.log_dir / log_name).write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr[-3000:]}
    result = json.loads(lines[0].split(" ", 1)[1])
    result["compiled"] = [
        {"module": m[1], "signature": m[2], "dynamo_s": float(m[3]), "inductor_s": float(m[4])}
        for m in COMPILED_LINE.finditer(done.stderr)
    ]
    return result


def print_tables(results: list[dict], inprocess: dict | None) -> None:
    print("\n| configuration | ready s | sequential p50 ms | batched vs alone | vs first |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        if "error" in r:
            print(f"| {r['label']} | error: {r['error'][:80]} | | | |")
            continue
        seq = r["sequential_ms"]["p50"]
        line = f"| {r['label']} | {r['ready_s']:.1f} | {seq:.1f} | "
        print(line + f"{r['batched_vs_alone_max_diff']} | {r.get('vs_first_max_diff', '-')} |")
    curves = [r for r in results if r.get("curve")]
    if curves:
        head = " | ".join(f"{r['label']} images/s | p50 ms | p99 ms" for r in curves)
        print(f"\n| clients | {head} |")
        print("| ---: |" + " ---: | ---: | ---: |" * len(curves))
        for i, level in enumerate(curves[0]["curve"]):
            cells = " | ".join(
                f"{c['images_per_s']:.1f} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f}"
                for c in (r["curve"][i] for r in curves)
            )
            print(f"| {level['clients']} | {cells} |")
    for r in results:
        if r.get("batches"):
            print(f"{r['label']}: {r['batches']}")
    if inprocess:
        print_inprocess(inprocess)
    for r in results:
        if r.get("inprocess"):
            print_inprocess(r["inprocess"], r["label"])


def print_inprocess(inprocess: dict, label: str = "") -> None:
    title = f"in-process{f' [{label}]' if label else ''}"
    if "error" in inprocess:
        print(f"\n{title}: error: {inprocess['error'][-600:]}")
        return
    print(f"\n{title}, {inprocess['device']}, 512x512 pipeline call per batch size:")
    print("| batch | call ms | ms/image | images/s | text ms | UNet ms | VAE decoder ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in inprocess["rows"]:
        m = row["modules_ms"]
        print(
            f"| {row['batch']} | {row['call_ms']:.1f} | {row['ms_per_image']:.2f} | "
            f"{row['images_per_s']:.1f} | {m['text']:.2f} | {m['unet']:.2f} | {m['vae']:.2f} |"
        )
    if "setup_s" in inprocess:
        compiled = "; ".join(
            f"{c['module']} {c['signature']}: Inductor {c['inductor_s']:.1f} s"
            for c in inprocess.get("compiled", [])
        )
        print(f"setup() {inprocess['setup_s']:.1f} s; compiled: {compiled or 'nothing'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configurations", nargs="+", help="label+NAME=VALUE+...")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--gpus", default="0")
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--clients", default="1,4,8,16,32")
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--sequential", type=int, default=40)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--inprocess", action="store_true")
    parser.add_argument(
        "--inprocess-each",
        action="store_true",
        help="time the pipeline in-process before each configuration, in its environment",
    )
    parser.add_argument(
        "--fresh-data-dirs",
        action="store_true",
        help="each configuration on its own empty data dir, <data dir>/<label>",
    )
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sd-batching-"))
    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.log_dir = args.log_dir or args.data_dir
    args.log_dir.mkdir(parents=True, exist_ok=True)

    # In-process first: with an empty data dir it compiles, and every fleet after it loads.
    inprocess = run_inprocess(args, args.data_dir) if args.inprocess else None
    print_tables([], inprocess)
    results: list[dict] = []
    first_alone = None

    def save() -> None:
        if args.out:  # after each step: a run cut short keeps what it measured
            document = {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "argv": sys.argv,
                "configurations": results,
                "inprocess": inprocess,
            }
            args.out.write_text(json.dumps(document, indent=2))

    for spec in args.configurations:
        label, env, curve = parse_configuration(spec)
        data_dir = args.data_dir / label if args.fresh_data_dirs else args.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if args.fresh_data_dirs and any(data_dir.iterdir()):
            raise SystemExit(f"--fresh-data-dirs: {data_dir} is not empty")
        own_inprocess = None
        if args.inprocess_each:  # with an empty store it compiles, and the fleet loads
            own_inprocess = run_inprocess(args, data_dir, env, label)
            print_inprocess(own_inprocess, label)
            results.append({"label": label, "env": env, "inprocess": own_inprocess})
            save()
            results.pop()
        try:
            result = run_configuration(label, env, curve, data_dir, args)
        except Exception as error:  # the next configurations still run
            print(f"[{label}] failed: {error!r}", flush=True)
            result = {"label": label, "env": env, "error": repr(error)}
        if own_inprocess is not None:
            result["inprocess"] = own_inprocess
        alone = result.pop("_alone", None)
        if alone is not None and first_alone is None:
            first_alone = alone
        elif alone is not None:
            result["vs_first_max_diff"] = max(
                int(np.abs(a - b).max()) for a, b in zip(first_alone, alone, strict=True)
            )
        results.append(result)
        save()
    print_tables(results, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
