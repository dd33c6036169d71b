"""Starts, watches and stops the runner processes of one fleet.

Each runner has one lifecycle task: start -> SETUP -> ready (IDLE) -> ... -> exit. A runner that
exits while the fleet is not stopping is replaced after fal's crash back-off (+30 s per
consecutive failure, at most 10 minutes), with FAILURE_DELAY visible meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.runner_process import RunnerLaunch, RunnerProcess, RunnerState

logger = logging.getLogger("minifal.fleet")

DEFAULT_STARTUP_TIMEOUT = 600.0  # fal's platform default when the App sets none
BACKOFF_STEP_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 600.0


def failure_backoff(consecutive_failures: int) -> float:
    return min(BACKOFF_STEP_SECONDS * consecutive_failures, BACKOFF_MAX_SECONDS)


class Supervisor:
    def __init__(
        self,
        launch: RunnerLaunch,
        gpu_pool: GpuPool,
        startup_timeout: float | None,
        grace_seconds: float,
        on_ready: Callable[[], None],
    ) -> None:
        self.launch = launch
        self.gpu_pool = gpu_pool
        self.startup_timeout = startup_timeout or DEFAULT_STARTUP_TIMEOUT
        self.grace_seconds = grace_seconds
        self.on_ready = on_ready
        self.runners: list[RunnerProcess] = []
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_index = 0

    def add_runner(self) -> RunnerProcess:
        gpus, shared = self.gpu_pool.acquire()
        runner_id = f"runner-{self._next_index}"
        self._next_index += 1
        if shared:
            logger.warning(
                "[%s] shares GPU %s with another runner (more runners than GPUs)",
                runner_id,
                ",".join(gpus),
            )
        runner = RunnerProcess(runner_id, self.launch, gpus)
        self.runners.append(runner)
        task = asyncio.create_task(self._lifecycle(runner), name=f"{runner_id}-lifecycle")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return runner

    async def _lifecycle(self, runner: RunnerProcess) -> None:
        failures = 0
        while not self.stopping:
            await runner.start()
            if await runner.wait_ready(self.startup_timeout):
                failures = 0
                self.on_ready()
            elif runner.exit_code is None and runner.state == RunnerState.SETUP:
                runner.last_exit_reason = f"startup_timeout ({self.startup_timeout:.0f} s)"
                logger.error(
                    "[%s] not ready within %s: stopping it",
                    runner.runner_id,
                    runner.last_exit_reason,
                )
                await runner.stop(self.grace_seconds, runner.last_exit_reason)
            code = await runner.wait_exit()
            if self.stopping:
                break
            failures += 1
            runner.last_exit_reason = runner.last_exit_reason or f"exited with code {code}"
            delay = failure_backoff(failures)
            logger.error(
                "[%s] %s; restarting in %.0f s", runner.runner_id, runner.last_exit_reason, delay
            )
            runner.state = RunnerState.FAILURE_DELAY
            runner.in_flight = 0
            await asyncio.sleep(delay)
            runner.last_exit_reason = None
        runner.state = RunnerState.TERMINATED

    @property
    def ready_count(self) -> int:
        return sum(1 for runner in self.runners if runner.accepts_requests)

    async def stop(self) -> None:
        """Stop every runner (each drains and runs ``teardown()``), then their lifecycle tasks."""
        self.stopping = True
        await asyncio.gather(
            *(runner.stop(self.grace_seconds, "fleet shutdown") for runner in self.runners),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in self.runners:
            self.gpu_pool.release(runner.gpus)
            runner.state = RunnerState.TERMINATED
        self.runners_stopped_at = time.time()
