"""Standby compile workers (``standby_workers.py``): real worker processes, started before their
jobs, in this test process as the runner.

A job handed to one compiles a tiny graph with real Inductor and loads as before; a pool that is
aborted or closed, or whose store turns out to hold the key's artifacts, leaves no worker
process alive (each pid is looked up after). The last two never let a worker get to its job:
they are process tests, no compile.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from minifal.compiled.call_signature import call_signature, flatten_call  # noqa: E402
from minifal.compiled.precompiled import compile_pool  # noqa: E402
from minifal.compiled.precompiled.artifact_files import ArtifactDir, ArtifactMeta  # noqa: E402
from minifal.compiled.precompiled.compile_phase import CompilePhase  # noqa: E402
from minifal.compiled.precompiled.compile_pool import CompilePool  # noqa: E402
from minifal.compiled.precompiled.compile_workers import WorkerCompile  # noqa: E402
from minifal.compiled.precompiled.graph_compile import CapturedCall  # noqa: E402
from minifal.compiled.precompiled.standby_workers import StandbyWorkers  # noqa: E402
from minifal.compiled.precompiled.warm_loader import WarmLoader  # noqa: E402

KEY = "tests/standby-workers"
WAIT_S = 30.0  # a worker process to be started, on a busy machine
COMPILE_S = 300.0  # a worker's imports and a tiny compile, on a busy machine


class Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.relu(x) * 2 + 1,)


def captured_tiny() -> tuple[CapturedCall, torch.Tensor]:
    """A graph as a worker gets it (traced by ``torch.fx``: no Dynamo needed for a job)."""
    x = torch.randn(4, 8)
    gm = torch.fx.symbolic_trace(Tiny())
    return CapturedCall(gm, [x], ["@0"], "", [], 0.0, False), x


def waited_for(found: Callable[[], list[int]]) -> list[int]:
    """``found()`` once it is not empty, polled for at most ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not (value := found()):
        assert time.monotonic() < deadline, "no standby worker started"
        time.sleep(0.05)
    return value


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def job_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pool's job files in ``tmp_path`` (the runner's private dir, elsewhere)."""
    monkeypatch.setattr(compile_pool, "private_cache_root", lambda _root: tmp_path)
    return tmp_path / "precompiled-jobs"


@pytest.mark.compile
def test_a_job_handed_to_a_standby_worker_compiles_and_loads(tmp_path: Path) -> None:
    standby = StandbyWorkers(1, tmp_path / "jobs", threads=1)
    standby.start()
    try:
        (waiting,) = waited_for(lambda: standby.pids)
        captured, x = captured_tiny()
        worker = WorkerCompile(captured, standby.take(time.time() + COMPILE_S))
        assert worker.pid == waiting  # the one started before the job
        (replacement,) = waited_for(lambda: standby.pids)
        artifact, seconds = worker.result(time.time() + COMPILE_S)
        assert seconds > 0
        (compiled,) = artifact(x)
        assert torch.allclose(compiled, Tiny()(x)[0])
        worker.discard()
    finally:
        standby.close()
    assert not alive(waiting) and not alive(replacement)
    assert list((tmp_path / "jobs").iterdir()) == []  # the replacement's log went with it


@pytest.mark.process
@pytest.mark.parametrize("end", ["abort", "close"])
def test_an_ended_pool_leaves_no_worker_process(job_dir: Path, end: str) -> None:
    """``abort``: a worker with a job (still importing) and the standby that replaced it are
    killed. ``close`` + ``finish`` (a block that compiled nothing): the standby ones stop."""
    pool = CompilePool(1)
    pool.start()
    (first,) = waited_for(lambda: pool._standby.pids)
    pids = [first]
    if end == "abort":
        captured, x = captured_tiny()
        call = flatten_call((x,), {})
        phase = CompilePhase(KEY, "Tiny", "x", in_worker=True)
        target: Any = SimpleNamespace()
        pool.submit(target, "Tiny", call, call_signature(call, False), captured, phase)
        pids += waited_for(lambda: pool._standby.pids)  # its replacement
        pool.abort("the test ends it")
    else:
        pool.close()
        pool.finish()
    assert [pid for pid in pids if alive(pid)] == []
    assert not pool._standby._thread.is_alive()


@pytest.mark.process
def test_a_store_that_holds_the_artifacts_stops_the_standby_workers(
    job_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A warm runner: its store load finds the key's artifacts, so no compile is expected; the
    standby workers stop then, quietly, and the block's end leaves none."""
    artifacts = ArtifactDir(tmp_path / "private")
    meta = ArtifactMeta("m.M", "mod", "sig", "x=f32[1]", ["@0"], "[]", 1.0, 2.0)
    artifacts.save(meta, SimpleNamespace(save=lambda path, format: Path(path).write_bytes(b"a")))
    store: Any = SimpleNamespace(cache_key=KEY, artifact_dir=artifacts, load=lambda _: artifacts)
    pool = CompilePool(2, defer=True)
    loader = WarmLoader(store, "store", True, on_covered=pool.retire_standby)
    caplog.set_level(logging.INFO, logger="minifal.precompiled")
    pool.start()
    pids = waited_for(lambda: pool._standby.pids if len(pool._standby.pids) == 2 else [])
    loader.start()
    assert loader.wait_store(WAIT_S)
    assert pool._standby.pids == []
    assert [pid for pid in pids if alive(pid)] == []
    pool.close()
    assert pool.take_deferred() == []
    pool.finish()
    assert not pool._standby._thread.is_alive()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
