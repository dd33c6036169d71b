"""From a graph's hand-over to its compile worker's start: the worker's imports, paid or hidden.

One process plays a runner serving while compiling (``precompiled_modules``, the default), with
``MINIFAL_PRECOMPILED_WORKERS=N`` (default 1): the block opens, the app "loads its pipeline"
(``--load-s`` seconds of sleep: on a GPU host the load is mostly GPU and disk work), wraps a
small attention block and calls it once per ``--shapes`` (answered eagerly); the block ends and
the switchover captures each signature and hands it to a worker. For each signature it measures,
with the wall clock:

- ``submit -> compile start``: from ``CompilePool.submit`` (the hand-over) to the worker's call
  of ``standalone_compile`` with Inductor imported, i.e. the worker's imports still to pay (and,
  with more signatures than workers, the wait for a free one);
- ``handed -> compile start``: the same from the moment a worker was free for it (one job per
  worker: with more signatures than workers, a job waits in ``submit`` for a worker to end);
- ``submit -> switched``: to the signature's switch to compiled code.

It measures any checkout's code the same way (``PYTHONPATH`` says which): it wraps
``CompilePool.submit`` and the worker's ``standalone_compile`` from outside, through
``compile_workers.WORKER_CODE``. Prints a table; writes ``compile_worker_handoff.json`` under
``--out``. Run it from outside a checkout (a worker's ``python -c`` imports from its working
directory first), e.g. ``cd /tmp``:

    cd /tmp && PYTHONPATH=$REPO python $REPO/benchmarks/compile_worker_handoff.py --out OUT
    cd /tmp && PYTHONPATH=$MAIN python $REPO/benchmarks/compile_worker_handoff.py --out OUT_MAIN
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

WORKER_WRAPPER = """
import inspect, sys, time
from minifal.compiled.precompiled import compile_workers as w
_compile = w.standalone_compile
def timed(gm, inputs):
    import torch._inductor.compile_fx, torch._inductor.standalone_compile  # the compile's imports
    with open({times!r}, "a") as out:
        out.write(f"{{time.time():.3f}}\\n")
    return _compile(gm, inputs)
w.standalone_compile = timed
sys.exit(w.main(sys.argv[1:]) if inspect.signature(w.main).parameters else w.main())
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--load-s", type=float, default=6.0, help="the app's pipeline load")
    parser.add_argument("--shapes", default="2x8,4x8", help="batch x tokens, one signature each")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="handoff-"))
    times_file = args.out / "compile_starts.txt"
    times_file.unlink(missing_ok=True)
    os.environ.update(
        {
            "MINIFAL_DATA_DIR": str(data_dir),
            "MINIFAL_PRECOMPILED_WORKERS": str(args.workers),
            "MINIFAL_SERVE_WHILE_COMPILING": "1",
            "MINIFAL_EVENTS_FILE": str(args.out / "events.jsonl"),
        }
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from minifal.compiled.precompiled import compile_pool, compile_workers, precompiled_modules
    from minifal.startup.events import read_events

    compile_workers.WORKER_CODE = WORKER_WRAPPER.format(times=str(times_file))
    submits: list[float] = []
    submit = compile_pool.CompilePool.submit

    labels: list[str] = []

    def timed_submit(self, target, name, call, signature, *rest):  # type: ignore[no-untyped-def]
        submits.append(time.time())
        labels.append(signature.label)
        return submit(self, target, name, call, signature, *rest)

    compile_pool.CompilePool.submit = timed_submit  # type: ignore[method-assign]
    handed: list[float] = []
    worker_compile = compile_pool.WorkerCompile

    def timed_worker_compile(*a):  # type: ignore[no-untyped-def]
        handed.append(time.time())  # a worker is free: the job goes to it now
        return worker_compile(*a)

    compile_pool.WorkerCompile = timed_worker_compile  # type: ignore[misc]

    class Block(torch.nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(width)
            self.qkv = torch.nn.Linear(width, 3 * width)
            self.out = torch.nn.Linear(width, width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
            return x + self.out(torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v)

    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    started = time.time()
    with torch.inference_mode():
        with precompiled_modules("benchmarks/handoff") as precompiled:
            time.sleep(args.load_s)  # the pipeline load
            wrapped = precompiled.module(Block(args.width).eval())
            for batch, tokens in shapes:
                wrapped(torch.randn(batch, tokens, args.width))
        ready = time.time()
        assert precompiled.switchover is not None, "nothing to compile: not a cold start?"
        assert precompiled.switchover.join(args.timeout_s), "the switchover is still running"
    compile_starts = [float(line) for line in times_file.read_text().split()]
    switches = {
        e["details"]["signature"]: e
        for e in read_events(args.out / "events.jsonl")
        if e["phase"] == "precompiled.switch"
    }
    rows = []
    for index, (submitted, label) in enumerate(zip(submits, labels, strict=True)):
        start = compile_starts[index] if index < len(compile_starts) else None  # in order
        switched = switches.get(label)
        rows.append(
            {
                "signature": label,
                "submit_s": round(submitted - started, 2),
                "handed_s": round(handed[index] - started, 2),
                "handed_to_compile_start_s": round(start - handed[index], 2) if start else None,
                "submit_to_compile_start_s": round(start - submitted, 2) if start else None,
                "submit_to_switched_s": round(switched["end"] - submitted, 2) if switched else None,
                "switched": switched["details"]["switched"] if switched else None,
            }
        )
    result = {
        "workers": args.workers,
        "load_s": args.load_s,
        "ready_s": round(ready - started, 2),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "code": str(Path(compile_pool.__file__).parents[3]),
        "signatures": rows,
    }
    print(f"ready {result['ready_s']} s after the block opened; load average {os.getloadavg()}")
    columns = [
        ("signature", "signature", 30),
        ("submit s", "submit_s", 9),
        ("-> compile start s", "submit_to_compile_start_s", 19),
        ("handed s", "handed_s", 9),
        ("-> compile start s", "handed_to_compile_start_s", 19),
        ("submit -> switched s", "submit_to_switched_s", 21),
    ]
    print(" ".join(f"{title:>{width}}" for title, _, width in columns))
    for row in rows:
        print(" ".join(f"{row[key]!s:>{width}}" for _, key, width in columns))
    (args.out / "compile_worker_handoff.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
