"""Cold and warm starts of the SD-Turbo app under ``minifal run``, per compile strategy.

Each scenario starts a real fleet (``minifal run apps/sd_turbo.py --workers N``) with
``MINIFAL_SD_COMPILE=<strategy>`` on the strategy's own data dir, waits until every runner is
ready, makes one image per warmup size over HTTP, stops the fleet and reads the run's startup
report. A ``cold`` scenario first empties the data dir; ``warm`` reuses what the runs before it
left. Numbers per runner: spawn to ready, ``setup``, the compile block (compile + warmup of both
shapes), Dynamo / Inductor / autotune seconds inside it, and per shape whether the graph was
loaded or compiled.

    python benchmarks/sd_turbo_warm_start.py --workers 2 \\
        --scenarios static:cold static:warm precompiled:cold precompiled:warm --out warm.json

A scenario is ``STRATEGY[+NAME=VALUE...]:cold|warm``; the assignments are environment variables
of that fleet (an Inductor setting, ``MINIFAL_SD_PRECOMPILE=unet,vae,text``), and each variant
has its own data dir. ``--env NAME=VALUE`` adds a variable to every fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sd_turbo_fleet import wait_ready  # the same readiness probe (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parents[1]
# Timings of compiled code, and "ready" as before serving while compiling: a cold runner is
# ready once its artifacts are compiled (benchmarks/cold_start_serving.py measures the default).
COMPILED_ONLY = {"MINIFAL_SERVE_WHILE_COMPILING": "0"}
APP = REPO / "apps" / "sd_turbo.py"
SIZES = ((512, 512), (768, 512))
FORK_SERVER_READY = re.compile(
    r"fork server ready \(pid \d+\): (?P<modules>\d+) modules imported in (?P<seconds>[\d.]+) s"
)


def run_fleet(
    strategy: str, env: dict[str, str], data_dir: Path, args: argparse.Namespace, log: Path
) -> dict:
    command = [sys.executable, "-m", "minifal.cli", "run", str(APP)]
    command += ["--workers", str(args.workers), "--port", str(args.port)]
    command += ["--data-dir", str(data_dir)] + (["--gpus", args.gpus] if args.gpus else [])
    env = {**COMPILED_ONLY, **os.environ, "MINIFAL_SD_COMPILE": strategy, **dict(args.env), **env}
    url = f"http://127.0.0.1:{args.port}"
    log_start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out, httpx.Client(timeout=300.0) as client:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            ready_s = wait_ready(client, url, args.workers, process)
            requests = []
            for width, height in SIZES:
                inference_ms = []
                for seed in range(args.requests):
                    body = {"prompt": "a fox", "width": width, "height": height, "seed": seed}
                    response = client.post(url + "/", json=body)
                    response.raise_for_status()
                    inference_ms.append(response.json()["timings"]["inference"] * 1000)
                requests.append(
                    {
                        "size": f"{width}x{height}",
                        "n": len(inference_ms),
                        "inference_ms_p50": statistics.median(inference_ms),
                        "inference_ms_min": min(inference_ms),
                    }
                )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "minifal.cli",
            "startup-report",
            "--data-dir",
            str(data_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    with log.open("rb") as fleet_log:
        fleet_log.seek(log_start)
        fork_server = FORK_SERVER_READY.search(fleet_log.read().decode(errors="replace"))
    return {
        "all_ready_s": ready_s,
        "fork_server_imports_s": float(fork_server["seconds"]) if fork_server else None,
        "fork_server_modules": int(fork_server["modules"]) if fork_server else None,
        "requests": requests,
        "report": json.loads(report.stdout),
    }


def summarize(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per runner: the numbers this benchmark is about."""
    rows = []
    for runner in report["runners"]:
        phases = runner["phases"]
        duration = {name: timing["duration_s"] for name, timing in phases.items()}.get

        block = phases.get("precompiled") or phases.get("compile_cache.compile")
        details = block["details"][0] if block else {}
        setup = (phases.get("setup") or {}).get("details") or [{}]
        shapes = []
        for name, how in (("precompiled.load", "loaded"), ("precompiled.compile", "compiled")):
            for item in phases.get(name, {}).get("details", []):
                failed = "error" in item  # a compile that ended without an artifact
                shapes.append(
                    {"signature": item.get("signature"), "how": how if not failed else "failed"}
                )
        rows.append(
            {
                "runner": runner["runner"],
                "ready_s": runner["ready_at_s"],
                "setup_s": duration("setup"),
                "compile_block_s": block["duration_s"] if block else None,
                "cache": runner["cache"],
                "dynamo_s": details.get("dynamo_s"),
                "backend_s": details.get("backend_s"),
                "autotune_s": details.get("autotune_s"),
                "dynamo_graphs": details.get("dynamo_graphs"),
                "warmup_s": details.get("warmup_s"),
                "waited_for_load_s": details.get("waited_for_load_s"),
                "artifact_load_s": duration("precompiled.load"),
                "artifact_compile_s": duration("precompiled.compile"),
                "gc_s": setup[-1].get("gc_s"),
                "gc_full_collections": setup[-1].get("gc_full_collections"),
                "shapes": shapes,
            }
        )
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=["precompiled:cold", "precompiled:warm"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus")
    parser.add_argument("--requests", type=int, default=10, help="per warmup size, after ready")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--work-dir", type=Path, help="data dirs live here (default: a temp dir)")
    parser.add_argument("--env", action="append", default=[], type=lambda s: tuple(s.split("=", 1)))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sd-warm-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    columns = (
        "runner",
        "ready_s",
        "setup_s",
        "compile_block_s",
        "dynamo_s",
        "backend_s",
        "autotune_s",
        "dynamo_graphs",
        "warmup_s",
        "gc_s",
        "cache",
    )
    print("scenario".ljust(22) + "  ".join(c.rjust(10) for c in columns))
    for scenario in args.scenarios:
        variant, _, temperature = scenario.partition(":")
        strategy, *assignments = variant.split("+")
        env = dict(assignment.split("=", 1) for assignment in assignments)
        data_dir = work / strategy  # variants of a strategy share its store
        if temperature == "cold":
            shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        log = work / f"{data_dir.name}.log"
        outcome = run_fleet(strategy, env, data_dir, args, log)
        rows = summarize(outcome["report"])
        results.append(
            {
                "scenario": scenario,
                "all_ready_s": outcome["all_ready_s"],
                "fork_server_imports_s": outcome["fork_server_imports_s"],
                "fork_server_modules": outcome["fork_server_modules"],
                "requests": outcome["requests"],
                "runners": rows,
                "report": outcome["report"],
            }
        )
        for row in rows:
            print(scenario.ljust(22) + "  ".join(_fmt(row[c]).rjust(10) for c in columns))
            for shape in row["shapes"]:
                print(" " * 24 + f"{shape['how']:9} {shape['signature']}")
        print(
            " " * 24
            + f"all ready after {outcome['all_ready_s']:.1f} s"
            + (
                f" (fork server: {outcome['fork_server_modules']} modules in "
                f"{outcome['fork_server_imports_s']:.1f} s)"
                if outcome["fork_server_imports_s"] is not None
                else " (no fork server)"
            )
            + "; requests: "
            + ", ".join(
                f"{r['size']} inference p50 {r['inference_ms_p50']:.1f} ms"
                for r in outcome["requests"]
            )
        )
    if args.out:
        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(sys.argv),
            "env": dict(args.env),
        }
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
