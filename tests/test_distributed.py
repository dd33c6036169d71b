"""``fal.distributed`` for real: spawned worker processes in one ``torch.distributed`` group.

On CPU with gloo and world_size 2: calls whose workers all-reduce across ranks, streams, fal's
error dict, timeouts, and a worker killed mid-call (the call fails at once, no process is left).
Then fal's multi-GPU example app under ``minifal run``: it answers end to end; a dead worker
makes its runner exit (the fleet restarts it); a killed runner takes its workers with it.
Worker processes are slow to spawn here, so one runner serves a module's read-only tests.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import torch.distributed as dist
from fleet_support import Fleet, pid_is_gone, poll_until, start_fleet
from PIL import Image

from minifal.distributed import DistributedRunner, DistributedWorker
from minifal.distributed import worker_group as worker_group_module
from minifal.distributed.errors import DistributedWorkerCrashed

DISTRIBUTED_APP = Path(__file__).parent / "apps_fal" / "distributed_app.py"
CALL_BOUND_S = 30.0
WAIT_S = 60.0
# CPU and gloo here and in CI; on a machine with GPUs the same tests run with NCCL.
RANK0_DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"

pytestmark = pytest.mark.skipif(
    torch.cuda.device_count() == 1, reason="world_size 2 needs 2 GPUs, or none (CPU, gloo)"
)


class ProbeWorker(DistributedWorker):
    """Each call all-reduces ``rank + 1`` over the ranks, so rank 0's result shows them all."""

    def setup(self, offset: int = 0, **kwargs: Any) -> None:
        self.offset = offset

    def __call__(
        self,
        streaming: bool = False,
        tag: str = "",
        count: int = 0,
        seconds: float = 0.0,
        started_file: str | None = None,
        fail_on_rank: int | None = None,
        skip_collective_on_rank: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        if started_file is not None:
            # Renamed into place: the test polls for the name and must never read it empty.
            partial = Path(f"{started_file}.{self.rank}.partial")
            partial.write_text(str(os.getpid()))
            partial.rename(f"{started_file}.{self.rank}")
        time.sleep(seconds)
        for index in range(count):
            self.add_streaming_result({"index": index, "rank": self.rank})
        if skip_collective_on_rank == self.rank:
            raise RuntimeError(f"rank {self.rank} gives up before the all_reduce")
        total = torch.tensor([float(self.rank + 1)], device=self.device)
        dist.all_reduce(total)
        if fail_on_rank == self.rank:
            raise ValueError(f"rank {self.rank} refuses {tag!r}")
        return {
            "tag": tag,
            "sum": total.item() + self.offset,
            "world_size": self.world_size,
            "device": str(self.device),
            "streaming": streaming,
        }


class BrokenSetupWorker(DistributedWorker):
    def setup(self, **kwargs: Any) -> None:
        if self.rank == 1:
            raise OSError("no weights at /data/model")


class PictureWorker(DistributedWorker):
    """Answers an image and a tensor, and counts the keepalive calls it got."""

    def setup(self, **kwargs: Any) -> None:
        self.keepalives = 0

    def __call__(self, streaming: bool = False, keepalive: bool = False, **kwargs: Any) -> Any:
        if keepalive:
            self.keepalives += 1
            return {}
        return {
            "image": Image.new("RGB", (8, 4), (255, 0, 0)),
            "tensor": torch.arange(6).reshape(2, 3),
            "keepalives": self.keepalives,
        }


class GpuProbeWorker(DistributedWorker):
    """What each rank sees of its GPU, from the thread that runs ``__call__``."""

    def __call__(
        self, streaming: bool = False, hold_rank: int | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if hold_rank == self.rank:
            time.sleep(CALL_BOUND_S)  # the other rank waits in NCCL's all_reduce meanwhile
        total = torch.tensor([float(self.rank + 1)], device=self.device)
        dist.all_reduce(total)
        uuids: list[str | None] = [None] * self.world_size
        dist.all_gather_object(uuids, str(torch.cuda.get_device_properties(self.device).uuid))
        return {
            "sum": total.item(),
            "backend": dist.get_backend(),
            "current": torch.cuda.current_device(),
            "uuids": uuids,
        }


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


@pytest.fixture(scope="module")
def runner() -> Iterator[DistributedRunner]:
    started = DistributedRunner(worker_cls=ProbeWorker, world_size=2)
    run(started.start(offset=100))
    try:
        yield started
    finally:
        run(started.stop())


# -- calls --------------------------------------------------------------------------------------


@pytest.mark.process
def test_invoke_returns_rank_zeros_result_of_an_all_reduce(runner: DistributedRunner) -> None:
    result = run(runner.invoke({"tag": "one"}))
    # 1 + 2 from the two ranks, plus what start() passed to setup().
    assert result == {
        "tag": "one",
        "sum": 103.0,
        "world_size": 2,
        "device": RANK0_DEVICE,
        "streaming": False,
    }
    assert runner.is_alive()


@pytest.mark.process
def test_stream_yields_rank_zeros_items_then_its_result(runner: DistributedRunner) -> None:
    items = run(collect(runner.stream({"tag": "s", "count": 3})))
    assert items[:3] == [{"index": index, "rank": 0} for index in range(3)]
    assert items[3]["sum"] == 103.0 and items[3]["streaming"] is True
    assert len(items) == 4

    events = run(collect(runner.stream({"tag": "t", "count": 2}, as_text_events=True)))
    assert all(event.startswith(b"data: ") and event.endswith(b"\n\n") for event in events)
    decoded = [json.loads(event[len(b"data: ") :]) for event in events]
    assert decoded[:2] == [{"index": 0, "rank": 0}, {"index": 1, "rank": 0}]
    assert decoded[2]["tag"] == "t"


@pytest.mark.process
def test_rank_zero_error_is_falls_error_dict(runner: DistributedRunner) -> None:
    assert run(runner.invoke({"tag": "x", "fail_on_rank": 0})) == {"error": "rank 0 refuses 'x'"}
    # Another rank's error is logged; rank 0's result stands.
    assert run(runner.invoke({"tag": "y", "fail_on_rank": 1}))["sum"] == 103.0


@pytest.mark.process
def test_timeout_and_the_late_answer_is_not_taken_for_the_next(runner: DistributedRunner) -> None:
    with pytest.raises(TimeoutError, match=r"timed out after 0\.2 seconds"):
        run(runner.invoke({"tag": "late", "seconds": 1.0}, timeout=0.2))
    with pytest.raises(TimeoutError, match="inactivity"):
        run(collect(runner.stream({"tag": "slow", "seconds": 1.0}, streaming_timeout=0.2)))

    async def two_at_once() -> list[Any]:
        calls = (runner.invoke({"tag": tag, "seconds": 0.1}) for tag in ("a", "b"))
        return await asyncio.gather(*calls)

    assert [result["tag"] for result in run(two_at_once())] == ["a", "b"]


@pytest.mark.process
def test_images_and_tensors_cross_and_keepalive_calls_an_idle_worker() -> None:
    async def scenario() -> list[Any]:
        async with DistributedRunner(
            worker_cls=PictureWorker,
            world_size=1,
            keepalive_payload={"keepalive": True},
            keepalive_interval=0.2,
        ) as pictures:
            results = [await pictures.invoke()]
            for _ in range(20):  # bounded: idle longer than the interval, then look
                await asyncio.sleep(0.5)
                results.append(await pictures.invoke())
                if results[-1]["keepalives"]:
                    break
            return results

    results = run(scenario())
    first = results[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (8, 4)
    assert torch.equal(first["tensor"], torch.arange(6).reshape(2, 3))
    assert results[-1]["keepalives"] >= 1


@pytest.mark.unit
def test_bad_uses_fail_clearly() -> None:
    class Local(DistributedWorker):
        pass

    with pytest.raises(RuntimeError, match="define the worker class at module level"):
        run(DistributedRunner(worker_cls=Local, world_size=2).start())
    idle = DistributedRunner(worker_cls=ProbeWorker, world_size=2)
    with pytest.raises(RuntimeError, match="not running"):
        run(idle.invoke())
    with pytest.raises(RuntimeError, match="not running"):
        run(idle.stop())


# -- crashes ------------------------------------------------------------------------------------


@pytest.mark.process
def test_a_failed_setup_fails_start_with_its_error() -> None:
    broken = DistributedRunner(worker_cls=BrokenSetupWorker, world_size=2)
    with pytest.raises(RuntimeError, match="Failed to start") as failure:
        run(broken.start())
    assert "rank 1" in str(failure.value) and "no weights at /data/model" in str(failure.value)
    assert all(pid_is_gone(process.pid) for process in broken.context.processes)
    assert not broken.is_alive()


@pytest.mark.process
def test_a_worker_killed_mid_call_fails_the_call_and_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashing = DistributedRunner(worker_cls=ProbeWorker, world_size=2)
    started = str(tmp_path / "started")

    async def kill_rank_one_mid_call() -> BaseException:
        await crashing.start()
        call = asyncio.create_task(crashing.invoke({"seconds": 60, "started_file": started}))
        marker = Path(f"{started}.1")
        deadline = time.monotonic() + CALL_BOUND_S
        while not marker.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # bounded poll for the call to reach rank 1
        os.kill(int(marker.read_text()), signal.SIGKILL)
        with pytest.raises(DistributedWorkerCrashed) as failure:
            await asyncio.wait_for(call, CALL_BOUND_S)
        return failure.value

    error = run(kill_rank_one_mid_call())
    assert "rank 1" in str(error) and "SIGKILL" in str(error)
    assert error.status_code == 503  # the fleet retries a queued request on another runner
    pids = [process.pid for process in crashing.context.processes]
    assert all(pid_is_gone(pid) for pid in pids), "a worker outlived the crash"
    assert not crashing.is_alive()
    with pytest.raises(DistributedWorkerCrashed, match="rank 1"):
        run(crashing.invoke())

    # The same runner starts again; a rank that fails while the others wait in a collective
    # for it puts the workers out of step: that is a crash too, after a grace period.
    monkeypatch.setattr(worker_group_module, "OUT_OF_STEP_GRACE_S", 0.5)

    async def out_of_step() -> None:
        await crashing.start()
        assert (await crashing.invoke())["sum"] == 3.0
        with pytest.raises(DistributedWorkerCrashed, match="out of step"):
            await crashing.invoke({"skip_collective_on_rank": 1}, timeout=int(CALL_BOUND_S))

    run(out_of_step())
    pids = [process.pid for process in crashing.context.processes]
    assert all(pid_is_gone(pid) for pid in pids)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"
)
def test_nccl_ranks_on_their_own_gpus_and_a_crash_inside_a_collective() -> None:
    gpus = DistributedRunner(worker_cls=GpuProbeWorker, world_size=2)

    async def scenario() -> tuple[dict[str, Any], BaseException]:
        await gpus.start()
        result = await gpus.invoke()
        call = asyncio.create_task(gpus.invoke({"hold_rank": 1}))
        await asyncio.sleep(1.0)  # long enough for rank 0 to block in the all_reduce
        os.kill(gpus.context.processes[1].pid, signal.SIGKILL)
        with pytest.raises(DistributedWorkerCrashed) as failure:
            await asyncio.wait_for(call, CALL_BOUND_S)
        return result, failure.value

    result, error = run(scenario())
    assert result["sum"] == 3.0 and result["backend"] == "nccl"
    assert result["current"] == 0  # rank 0's hook thread has rank 0's GPU current
    assert len(set(result["uuids"])) == 2  # one GPU per rank
    assert "rank 1" in str(error)
    assert all(pid_is_gone(process.pid) for process in gpus.context.processes)


# -- fal's multi-GPU example under minifal run ------------------------------------------------


def worker_pids(runner_pid: int) -> list[int]:
    """The distributed worker processes a runner spawned (not multiprocessing's helpers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == runner_pid and b"spawn_main" in command:
            pids.append(int(entry.name))
    return sorted(pids)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    env = {"MINIFAL_FAILURE_BACKOFF_SECONDS": "0.5"}  # restart a crashed runner at once
    with start_fleet(
        DISTRIBUTED_APP, tmp_path_factory.mktemp("distributed"), workers=1, env=env
    ) as running:
        yield running


def ready_runner(fleet: Fleet, not_pid: int | None = None) -> dict[str, Any] | None:
    runners = fleet.runners()
    if len(runners) == 1 and runners[0]["state"] == "IDLE" and runners[0]["pid"] != not_pid:
        return runners[0]
    return None


def data_url_image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


@pytest.mark.process
def test_fal_multi_gpu_example_answers_end_to_end(fleet: Fleet) -> None:
    with fleet.client() as client:
        assert "/stream" in client.get("/openapi.json").json()["paths"]
        answer = client.post("/", json={"prompt": "a fox", "image_size": 32})
        assert answer.status_code == 200, answer.text
        assert answer.json()["num_gpus"] == 2
        picture = Image.open(io.BytesIO(httpx.get(answer.json()["image"]["url"]).content))
        assert picture.size == (64, 32)  # both ranks' images, gathered on rank 0

        request = {"prompt": "a fox", "image_size": 16, "num_inference_steps": 5}
        with client.stream("POST", "/stream", json=request) as streamed:
            assert streamed.status_code == 200
            body = "".join(streamed.iter_text())
        events = [json.loads(chunk[len("data: ") :]) for chunk in body.split("\n\n") if chunk]
        assert [event.get("step") for event in events] == [0, 4, None]
        assert data_url_image(events[0]["image"]["url"]).size == (4, 2)  # previews of 2 ranks
        assert data_url_image(events[-1]["image"]["url"]).size == (32, 16)

        assert client.post("/", json={"prompt": "x", "image_size": 12}).status_code == 422


@pytest.mark.process
def test_dead_worker_fails_its_runner_and_killed_runner_takes_its_workers(fleet: Fleet) -> None:
    first = poll_until(lambda: ready_runner(fleet), WAIT_S, "a ready runner", fleet)
    workers = worker_pids(first["pid"])
    assert len(workers) == 2

    os.kill(workers[1], signal.SIGKILL)
    second = poll_until(
        lambda: ready_runner(fleet, not_pid=first["pid"]), WAIT_S, "a restarted runner", fleet
    )
    # The runner exited with EXIT_DISTRIBUTED_WORKER_CRASHED; the supervisor names it.
    assert second["last_exit_reason"].startswith("a distributed worker died")
    assert all(pid_is_gone(pid) for pid in [first["pid"], *workers])
    with fleet.client() as client:
        assert client.post("/", json={"prompt": "again"}).status_code == 200

    workers = worker_pids(second["pid"])
    os.kill(second["pid"], signal.SIGKILL)  # no teardown, no atexit: the workers die with it
    poll_until(lambda: all(pid_is_gone(pid) for pid in workers), WAIT_S, "workers gone", fleet)
    third = poll_until(
        lambda: ready_runner(fleet, not_pid=second["pid"]), WAIT_S, "a restarted runner", fleet
    )

    workers = worker_pids(third["pid"])
    assert fleet.stop() == 0  # the app has no teardown: its workers stop at the runner's exit
    assert all(pid_is_gone(pid) for pid in [third["pid"], *workers])
