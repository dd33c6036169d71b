"""The SD-Turbo app's ``setup()`` alone, in fresh processes, per compile strategy (CPU or GPU).

    python benchmarks/sd_turbo_setup.py --data-dir /tmp/sd --repeats 3 none regional precompiled

Each strategy first runs once to fill its data dir (a cold start, not counted), then ``--repeats``
warm starts are timed: the app class is imported as ``minifal serve`` would and ``setup()`` is
called, after freezing the collector's survivors as a runner does (``--no-freeze``: not). Prints
one line per run and writes JSON with ``--out``. ``--env NAME=VALUE`` is passed on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time, json
sys.path.insert(0, {apps!r})
from minifal.compat.fal_alias import install_fal_alias
install_fal_alias()
import sd_turbo
app = sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo)
if {freeze!r}:
    from minifal.host.collector import freeze_survivors
    freeze_survivors()  # as the runner does before setup()
start = time.perf_counter()
app.setup()
print("SETUP", json.dumps(time.perf_counter() - start))
"""


def setup_seconds(strategy: str, data_dir: Path, env: dict[str, str], freeze: bool) -> float:
    environ = {
        **os.environ,
        **env,
        "MINIFAL_SD_COMPILE": strategy,
        "MINIFAL_DATA_DIR": str(data_dir),
    }
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    code = CHILD.format(apps=str(REPO / "apps"), freeze=freeze)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("SETUP "))
    return float(line.split(" ", 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("strategies", nargs="+")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], type=lambda s: tuple(s.split("=", 1)))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-freeze", dest="freeze", action="store_false")
    args = parser.parse_args()
    results = {}
    for strategy in args.strategies:
        data_dir = args.data_dir / strategy
        cold = setup_seconds(strategy, data_dir, dict(args.env), args.freeze)
        print(f"{strategy:12} cold {cold:6.2f} s", flush=True)
        results[strategy] = {"cold_s": cold, "warm_s": []}
    for _ in range(args.repeats):  # interleaved, so that a noisy minute hits every strategy
        for strategy in args.strategies:
            warm = setup_seconds(strategy, args.data_dir / strategy, dict(args.env), args.freeze)
            results[strategy]["warm_s"].append(warm)
            print(f"{strategy:12} warm {warm:6.2f} s", flush=True)
    if args.out:
        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(sys.argv),
            "env": dict(args.env),
            "freeze": args.freeze,
        }
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
