"""A runner whose store is empty imports no compiler before it is ready.

On an empty store the ``precompiled_modules`` block answers its warmup eagerly and compiles
after the runner is ready (the switchover, the compile workers), so nothing of minifal's needs
Inductor, Dynamo or Triton before then; their imports (6.5-8.7 s for Inductor in a fresh
process on an H100 host) would only hold the GIL while the app loads its weights. A fresh
process is the point: the test process has imported them long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from child_path import repo_pythonpath

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]

# The block's warmup call waits for the background store load (a miss: this process takes the
# compile lease), so what the loader thread imports is in by then. The child leaves with
# os._exit right after its report: leaving the block would start the switchover, which captures
# with Dynamo (after ready, as it should).
EMPTY_STORE_BLOCK = """
import json, os, sys, threading

COMPILER = ("torch._inductor", "torch._dynamo", "triton")
first_imports = {}


class Watch:  # which thread looked for it first (a look alone, find_spec, imports nothing)
    def find_spec(self, name, path=None, target=None):
        if name in COMPILER and name not in sys.modules:
            first_imports.setdefault(name, threading.current_thread().name)
        return None


sys.meta_path.insert(0, Watch())
import torch
from minifal.compiled.precompiled import precompiled_modules

with precompiled_modules("tests/empty-store") as precompiled:
    module = precompiled.module(torch.nn.Linear(4, 4).eval())
    with torch.no_grad():
        module(torch.ones(2, 4))
    imported = {name: first_imports[name] for name in COMPILER if name in sys.modules}
    report = {"imports": imported, "served": module.resolutions}
    print("RESULT " + json.dumps(report), flush=True)
    os._exit(0)
"""


@pytest.mark.process
def test_the_block_imports_no_compiler_before_the_runner_is_ready(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MINIFAL_DATA_DIR": str(tmp_path),
        "MINIFAL_EVENTS_FILE": str(tmp_path / "events.jsonl"),
        "MINIFAL_PRECOMPILED_WORKERS": "0",  # no worker process: this one's imports are asked
        "PYTHONPATH": repo_pythonpath(),
    }
    done = subprocess.run(
        [sys.executable, "-c", EMPTY_STORE_BLOCK],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    report = json.loads(line.removeprefix("RESULT "))
    assert list(report["served"].values()) == ["eager, switching"]  # the empty-store path
    assert report["imports"] == {}, report["imports"]  # which module, by which thread
