"""A runner-like process for the compile-cache tests: compile a small model inside the context.

Prints one JSON line (``RESULT {...}``) with torch's own FX-graph-cache counters and the startup
events of this process, so tests judge hits and misses by what torch did, not by our logs.

usage: child.py KEY SHAPES [KEY SHAPES ...] [--sleep-in-body S] [--raise-in-body]
                [--torch-version V]
  SHAPES: comma-separated batch sizes, e.g. "8,16" (each a separately compiled static graph)
  Several KEY SHAPES pairs: one cache context per key, one after the other (give each key shapes
  of its own, so that each compiles a graph the process has not compiled yet).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")


class BodyError(RuntimeError):
    pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", nargs="+", metavar="KEY SHAPES")
    parser.add_argument("--sleep-in-body", type=float, default=0.0)
    parser.add_argument("--raise-in-body", action="store_true")
    parser.add_argument("--torch-version", help="pretend to be another torch build")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give KEY SHAPES pairs")

    import torch

    if args.torch_version:
        torch.__version__ = args.torch_version  # type: ignore[misc]
    from torch._dynamo.utils import counters

    from minifal.compiled.cache import synchronized_inductor_cache
    from minifal.startup.events import events_file, read_events

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    compiled = torch.compile(model, dynamic=False)
    outcome = "ok"
    started = time.time()
    try:
        for key, shapes in zip(args.pairs[::2], args.pairs[1::2], strict=True):
            with synchronized_inductor_cache(key):
                print("IN-BODY", flush=True)
                time.sleep(args.sleep_in_body)
                with torch.no_grad():
                    for batch in (int(s) for s in shapes.split(",")):
                        compiled(torch.randn(batch, 32))
                if args.raise_in_body:
                    raise BodyError("boom")
    except BodyError as exc:
        outcome = f"raised {type(exc).__name__}: {exc}"
    path = events_file()
    result = {
        "outcome": outcome,
        "seconds": time.time() - started,
        "fx_hit": counters["inductor"]["fxgraph_cache_hit"],
        "fx_miss": counters["inductor"]["fxgraph_cache_miss"],
        "events": read_events(path) if path else [],
        "inductor_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
