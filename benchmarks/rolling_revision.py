"""A new revision rolled out under constant load (issue 27, item 4).

    python benchmarks/rolling_revision.py [--clients 16] [--workers 2] [--before 5] [--after 5]
                                          [--strategy rolling] [--json out.json]

A ``minifal run`` fleet of ``tests/apps_revisions/revision_app.py`` (a plain JSON app whose
answers name their revision; each call works 50 ms) takes ``--clients`` concurrent clients, sync
and queue calls alternating, each sending its next call when its last is answered. After
``--before`` seconds the app file's revision changes and ``minifal deploy`` rolls it out; the
load runs ``--after`` more seconds after the deploy returns. Printed: calls, failed, lost, calls
per revision, how long the deploy command took (the new manifest is computed in a child process
first), the gateway's own rollout time (its log: revision accepted -> promoted), when the
last call that the old revision served was sent, and latencies before, during and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from revision_load import Load, last_old_send, latency_ms, summary  # noqa: E402

APP = ROOT / "tests" / "apps_revisions" / "revision_app.py"
READY_TIMEOUT_S = 90.0
MINIFAL = (sys.executable, "-m", "minifal.cli")
ROLLED_OUT = re.compile(r"revision (r2-\w+) serves \(rolled out in ([\d.]+) s\)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, runners: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"minifal run exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("runners_ready", 0) >= runners:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the fleet was not ready within {READY_TIMEOUT_S} s")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    app = work / "revision_app.py"
    shutil.copy(APP, app)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIFAL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    log_path = work / "fleet.log"
    command = [*MINIFAL, "run", str(app), "--port", str(port)]
    command += ["--workers", str(args.workers), "--data-dir", str(work / "data")]
    with log_path.open("wb") as log:
        fleet = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, args.workers, fleet)
        load = Load(url, args.clients).start()
        time.sleep(args.before)
        app.write_text(app.read_text().replace('REVISION = "v1"', 'REVISION = "v2"'))
        deployed_at = time.time()
        deploy = subprocess.run(
            [*MINIFAL, "deploy", str(app), "--url", url, "--strategy", args.strategy],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        serving_at = time.time()
        time.sleep(args.after)
        answers = load.stop()
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.wait(60)
    log_text = log_path.read_text(errors="replace")
    rolled = ROLLED_OUT.search(log_text)
    result = summary(answers, load.sent)
    before = [a for a in answers if a.done_at < deployed_at]
    during = [a for a in answers if a.sent_at < serving_at and a.done_at >= deployed_at]
    after = [a for a in answers if a.sent_at >= serving_at]
    last_old = last_old_send(answers, "v1", deployed_at)
    return {
        "clients": args.clients,
        "workers": args.workers,
        "strategy": args.strategy,
        "seconds": round(answers[-1].done_at - answers[0].sent_at, 2) if answers else 0,
        **{key: result[key] for key in ("sent", "answered", "lost", "failed", "sync", "queue")},
        "by_revision": result["by_revision"],
        "after_deploy_by_revision": summary(after, len(after))["by_revision"],
        "deploy_exit_code": deploy.returncode,
        "deploy_output": deploy.stdout.strip(),
        "deploy_command_s": round(serving_at - deployed_at, 2),
        "gateway_rollout_s": float(rolled[2]) if rolled else None,
        "last_v1_call_sent_after_deploy_s": None if last_old is None else round(last_old, 2),
        "latency_ms": {
            "before": latency_ms(before),
            "during": latency_ms(during),
            "after": latency_ms(after),
        },
        "failures": result["failures"],
    }


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("clients (sync + queue alternating)", result["clients"]),
        ("runners", result["workers"]),
        ("strategy", result["strategy"]),
        ("calls answered / sent", f"{result['answered']} / {result['sent']}"),
        ("failed", result["failed"]),
        ("lost", result["lost"]),
        ("calls by revision", result["by_revision"]),
        ("calls sent after the deploy returned", result["after_deploy_by_revision"]),
        ("deploy command (manifest + rollout), s", result["deploy_command_s"]),
        ("gateway rollout (revision accepted -> promoted), s", result["gateway_rollout_s"]),
        (
            "last call served by v1 sent after deploy start, s",
            result["last_v1_call_sent_after_deploy_s"],
        ),
    ]
    for phase, figures in result["latency_ms"].items():
        shown = {k: None if v is None else round(v, 1) for k, v in figures.items()}
        rows.append((f"latency {phase} the deploy, ms", shown))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--before", type=float, default=5.0)
    parser.add_argument("--after", type=float, default=5.0)
    parser.add_argument("--strategy", choices=("rolling", "recreate"), default="rolling")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rolling-revision-") as work:
        result = run(args, Path(work))
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = result["failed"] == 0 and result["lost"] == 0 and result["deploy_exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
