"""A fake runner backend for the supervisor's process-free tests: instances the test drives
(ready, crash, exit, health after a resume), a fake CUDA checkpoint driver (the real one needs a
GPU: tests/test_suspension_gpu.py), and a supervisor with millisecond timings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from minifal.fleet.backends.base import RunnerRevision
from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.runner_suspension import Offloader, Suspender
from minifal.fleet.supervisor import Supervisor


class FakeInstance:
    """A runner instance the test drives: it gets ready, crashes or exits when told to."""

    node = "fake"
    unix_path = None

    def __init__(self, runner_id: str, number: int, obeys_terminate: bool) -> None:
        self.url = f"http://{runner_id}.invalid"
        self.pid = 1000 + number
        self.port = 2000 + number
        self.obeys_terminate = obeys_terminate
        self.terminated = False
        self.killed = False
        self.healthy = True
        self.revision: RunnerRevision | None = None
        self._ready = asyncio.Event()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def exited(self) -> bool:
        return self._exit.done()

    def become_ready(self) -> None:
        self._ready.set()

    def exit(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)

    async def wait_ready(self, timeout: float) -> bool:
        ready = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait(
            [ready, self._exit], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        return ready in done

    async def answers(self, timeout: float) -> bool:
        return not self.exited and self.healthy

    async def wait_exit(self) -> int:
        return await asyncio.shield(self._exit)

    def terminate(self) -> None:
        self.terminated = True
        if self.obeys_terminate:
            self.exit(0)

    def kill(self) -> None:
        self.killed = True
        self.exit(-9)


class FakeBackend:
    def __init__(self, ready_at_once: bool = True, obeys_terminate: bool = True) -> None:
        self.ready_at_once = ready_at_once
        self.obeys_terminate = obeys_terminate
        self.instances: list[FakeInstance] = []

    async def start(
        self, runner_id: str, gpus: list[str], revision: RunnerRevision | None = None
    ) -> FakeInstance:
        instance = FakeInstance(runner_id, len(self.instances), self.obeys_terminate)
        instance.revision = revision
        self.instances.append(instance)
        if self.ready_at_once:
            instance.become_ready()
        return instance

    async def close(self) -> None:
        pass


class FakeDriver:
    """Records calls; fails a step when told; can hold a resume until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail: str | None = None
        self.resume_gate = threading.Event()
        self.resume_gate.set()

    def suspend(self, pid: int, lock_timeout_s: float) -> None:
        self.calls.append(("suspend", pid))
        if self.fail == "suspend":
            raise RuntimeError(f"lock of pid {pid} failed: CUDA_ERROR_TIMEOUT")

    def resume(self, pid: int) -> None:
        self.calls.append(("resume", pid))
        assert self.resume_gate.wait(5.0)
        if self.fail == "resume":
            raise RuntimeError("restore failed")


async def until(condition: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def supervisor(
    backend: FakeBackend,
    startup_timeout: float = 5.0,
    gpus: list[str] | None = None,
    suspender: Suspender | None = None,
    grace_seconds: float = 0.05,
    offloader: Offloader | None = None,
    sleep_seconds: float = 0.0,
) -> tuple[Supervisor, list[str]]:
    """A supervisor with back-off steps and grace periods of milliseconds; its ready calls."""
    readies: list[str] = []
    made = Supervisor(
        backend,
        GpuPool(gpus or [], 1),
        Path("/nonexistent/run"),
        startup_timeout,
        grace_seconds=grace_seconds,
        on_ready=lambda: readies.append("ready"),
        backoff_step=0.01,
        lost_runner_grace=0.01,
        suspender=suspender,
        offloader=offloader,
        sleep_seconds=sleep_seconds,
    )
    return made, readies


def states(runner: Runner) -> list[RunnerState]:
    return [state for _, state in runner.state_history]
