"""Suspension for real, on a GPU: the fleet suspends an idle runner with the CUDA driver's
checkpoint API, its GPU memory is freed, and a request resumes it with the same state.

Skipped on CPU CI (no GPU, no driver); on a GPU host: ``pytest tests/test_suspension_gpu.py``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from fleet_support import poll_until, start_fleet

from minifal.fleet.backends.cuda_checkpoint import load_cuda_checkpoint

APP = Path(__file__).parent / "apps_gpu" / "suspendable_app.py"
MIB = 2**20


def _driver_here() -> str | None:
    try:
        import torch
    except ImportError:
        return "no torch"
    if not torch.cuda.is_available():
        return "no GPU"
    driver, why = load_cuda_checkpoint()
    return None if driver is not None else why


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_driver_here() is not None, reason=f"{_driver_here()}"),
]


def gpu_memory_of(pid: int) -> int:
    """MiB the process holds on any GPU (0 when it has no context there)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    rows = (line.split(",") for line in out.splitlines() if line.strip())
    return sum(int(used) for owner, used in rows if int(owner) == pid)


def test_an_idle_runner_is_suspended_and_a_request_resumes_it(tmp_path: Path) -> None:
    suspending = start_fleet(
        f"{APP}::Suspendable", tmp_path, workers=None, extra_args=("--suspend", "on")
    )
    with suspending as fleet, fleet.client(timeout=300.0) as client:
        first = client.post("/", json={"seed": 3})
        assert first.status_code == 200, first.text
        runner = poll_until(
            lambda: next((r for r in fleet.runners() if r["state"] == "SUSPENDED"), None),
            120,
            "the runner suspended",
            fleet,
        )
        assert gpu_memory_of(runner["pid"]) <= 100
        assert runner["suspensions"]["host_memory_bytes"] > 1024 * MIB
        started = time.perf_counter()
        second = client.post("/", json={"seed": 3})
        resumed_in = time.perf_counter() - started
        assert second.status_code == 200, second.text
        assert second.json() == first.json()  # same weights, same kernel, same answer
        after = next(r for r in fleet.runners() if r["runner_id"] == runner["runner_id"])
        assert after["pid"] == runner["pid"] and after["suspensions"]["resumes"] >= 1
        print(f"resume + request: {resumed_in:.2f} s")


def test_a_runner_with_an_arena_sleeps_then_is_checkpointed_and_answers_the_same(
    tmp_path: Path,
) -> None:
    """Asleep: its weights leave the GPU (its context stays), a request brings them back.
    Left past ``--suspend-sleep``, the driver's checkpoint takes the rest: nothing on the GPU,
    and a request still gets the same answer."""
    app = f"{APP}::SleepySuspendable"
    args = ("--suspend", "on", "--suspend-sleep", "5")
    with (
        start_fleet(app, tmp_path, workers=None, extra_args=args) as fleet,
        fleet.client(timeout=300.0) as client,
    ):
        first = client.post("/", json={"seed": 3})
        assert first.status_code == 200, first.text

        def suspended(asleep: bool) -> dict | None:
            return next(
                (
                    r
                    for r in fleet.runners()
                    if r["state"] == "SUSPENDED" and r["suspensions"]["asleep"] is asleep
                ),
                None,
            )

        runner = poll_until(lambda: suspended(True), 120, "the runner asleep", fleet)
        assert runner["suspensions"]["pinned_bytes"] >= 1024 * MIB  # its 1 GiB of weights
        assert gpu_memory_of(runner["pid"]) < 1024  # MiB: the weights are off the GPU
        second = client.post("/", json={"seed": 3})
        assert second.status_code == 200, second.text
        assert second.json()["checksum"] == first.json()["checksum"]

        runner = poll_until(lambda: suspended(False), 120, "checkpointed after the sleep", fleet)
        assert gpu_memory_of(runner["pid"]) <= 100
        third = client.post("/", json={"seed": 3})
        assert third.status_code == 200, third.text
        assert third.json()["checksum"] == first.json()["checksum"]


def test_a_checkpoint_after_the_sleep_drops_the_cuda_graphs_and_the_next_call_captures_again(
    tmp_path: Path,
) -> None:
    """Before the late checkpoint the runner drops its CUDA graph (``/_minifal/release``):
    ``/runners`` says so, the GPU is empty, and the next call captures again and answers the
    same (eager and replayed sums compared with a tolerance: not the same kernels' order)."""
    app = f"{APP}::GraphedSuspendable"
    args = ("--suspend", "on", "--suspend-sleep", "2")
    with (
        start_fleet(app, tmp_path, workers=None, extra_args=args) as fleet,
        fleet.client(timeout=300.0) as client,
    ):

        def ask() -> dict:
            answer = client.post("/", json={"seed": 3})
            assert answer.status_code == 200, answer.text
            return answer.json()

        first = ask()  # runs, then captures
        replayed = ask()
        assert first["captures"] == replayed["captures"] == 1

        def checkpointed() -> dict | None:
            return next(
                (
                    r
                    for r in fleet.runners()
                    if r["state"] == "SUSPENDED" and r["suspensions"]["asleep"] is False
                ),
                None,
            )

        runner = poll_until(checkpointed, 120, "checkpointed after the sleep", fleet)
        assert runner["suspensions"]["graphs_released"] >= 1
        assert runner["suspensions"]["released_bytes"] > 0  # the graph's pool, workspaces
        assert gpu_memory_of(runner["pid"]) <= 100
        again = ask()  # restored, runs, captures again
        assert again["captures"] == 2
        assert again["checksum"] == pytest.approx(first["checksum"], rel=1e-4)
        last = ask()  # the new graph, replayed
        assert last["captures"] == 2
        assert last["checksum"] == pytest.approx(replayed["checksum"], rel=1e-4)
