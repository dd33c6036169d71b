"""The SD-Turbo app on a two-node Ray cluster on this machine: one compile across both nodes.

Starts a Ray cluster of two nodes on loopback (``ray.cluster_utils.Cluster``: a head and a
worker node, each its own raylet), then ``benchmarks/sd_turbo_fleet.py --ray ADDRESS`` (which
runs ``minifal run apps/sd_turbo.py --ray ADDRESS --workers 2``, serves prompts and prints the
startup report). Checks and prints where each runner ran and whether it compiled or loaded the
precompiled UNet: one runner per node, one compile.

    python benchmarks/ray_sd_turbo.py --out benchmarks/results/ray_sd_turbo_cpu.json

On CPU it runs the tiny random pipeline (a cold compile takes minutes on 2 cores): too slow for
the test suite, so ``tests/test_ray_runners.py`` leaves it to this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ray.cluster_utils import Cluster

HERE = Path(__file__).resolve().parent
NODE_ARGS: dict[str, Any] = {
    "num_cpus": 2,
    "node_ip_address": "127.0.0.1",
    "object_store_memory": 80 * 2**20,
}


def compiles_by_node(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each runner start: its node and its precompiled block (graphs loaded / compiled)."""
    rows = []
    for runner in report["runners"]:
        block = runner["phases"].get("precompiled", {}).get("details", [{}])[0]
        rows.append(
            {
                "runner": runner["runner"],
                "node": runner["node"],
                "ready_at_s": runner["ready_at_s"],
                "loaded": block.get("loaded"),
                "compiled": block.get("compiled"),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--port", type=int, default=8788)
    args = parser.parse_args()

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep Ray (and the gateway) on loopback
    head = {**NODE_ARGS, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
    cluster.add_node(**NODE_ARGS)
    try:
        with tempfile.TemporaryDirectory(prefix="ray-sd-") as scratch:
            data_dir = Path(scratch) / "data"
            command = [sys.executable, str(HERE / "sd_turbo_fleet.py"), "--ray", cluster.address]
            command += ["--workers", "2", "--requests", str(args.requests), "--concurrency", "2"]
            command += ["--port", str(args.port), "--data-dir", str(data_dir)]
            command += ["--out", str(args.out), "--png", str(args.out.with_suffix(".png"))]
            subprocess.run(command, check=True)
    finally:
        cluster.shutdown()

    result = json.loads(args.out.read_text())
    rows = compiles_by_node(result["startup_report"])
    nodes = {row["node"] for row in rows}
    compiled = [row for row in rows if row["compiled"]]
    result["ray"] = {"nodes": len(nodes), "runners": rows, "one_compile": len(compiled) == 1}
    args.out.write_text(json.dumps(result, indent=2))
    for row in rows:
        print(
            f"{row['runner']} on node {row['node'][:12]}: loaded {row['loaded']}, "
            f"compiled {row['compiled']}, ready at {row['ready_at_s']:.1f} s"
        )
    print(f"{len(nodes)} node(s), {len(compiled)} compiling runner(s)")
    return 0 if len(nodes) == 2 and len(compiled) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
