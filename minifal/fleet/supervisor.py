"""Starts, watches, replaces and stops the runner processes of one fleet.

Each runner has one lifecycle task: start -> SETUP -> ready (IDLE/RUNNING) -> ... -> exit.
- A runner not ready within ``startup_timeout`` is killed; that, a ``setup()`` that raises and a
  crash are failures: the runner restarts after fal's back-off (+30 s per consecutive failure, at
  most 10 minutes), in FAILURE_DELAY meanwhile, with the reason in ``last_exit_reason``.
- ``replace()`` (failed health checks, a request over ``request_timeout``) restarts it at once.
- ``retire()`` (keep_alive expired, fleet shutdown) drains it and lets it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.runner_process import RunnerLaunch, RunnerProcess, RunnerState
from minifal.runner_contract import exit_reason

logger = logging.getLogger("minifal.fleet")

DEFAULT_STARTUP_TIMEOUT = 600.0  # fal's platform default when the App sets none
BACKOFF_STEP_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 600.0
ENV_BACKOFF_STEP = "MINIFAL_FAILURE_BACKOFF_SECONDS"
REPLACE_GRACE_SECONDS = 5.0
TERMINATED_KEPT = 20  # finished runners still listed in /runners, with their exit reason


def failure_backoff(consecutive_failures: int, step: float = BACKOFF_STEP_SECONDS) -> float:
    return min(step * consecutive_failures, BACKOFF_MAX_SECONDS)


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
        self.backoff_step = float(os.environ.get(ENV_BACKOFF_STEP, BACKOFF_STEP_SECONDS))
        self.on_ready = on_ready
        self.runners: list[RunnerProcess] = []
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_index = 0

    @property
    def live_runners(self) -> list[RunnerProcess]:
        return [runner for runner in self.runners if runner.state != RunnerState.TERMINATED]

    @property
    def ready_count(self) -> int:
        return sum(1 for runner in self.runners if runner.accepts_requests)

    def find(self, runner_id: str | None) -> RunnerProcess | None:
        return next((r for r in self.runners if r.runner_id == runner_id), None)

    def _spawn(self, coroutine, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- state changes ------------------------------------------------------------------------

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
        self._spawn(self._lifecycle(runner), f"{runner_id}-lifecycle")
        return runner

    def retire(self, runner: RunnerProcess, reason: str) -> None:
        """Stop a runner for good: it drains its requests and runs ``teardown()``."""
        if runner.retiring:
            return
        runner.retiring = True
        logger.info("[%s] stopping: %s", runner.runner_id, reason)
        self._spawn(runner.stop(self.grace_seconds, reason), f"{runner.runner_id}-retire")

    def replace(self, runner: RunnerProcess, reason: str) -> None:
        """Stop an unhealthy runner now and start it afresh, without the crash back-off.

        A process that has already exited is left to its lifecycle, which sees a crash."""
        if runner.retiring or runner.replace_reason is not None or runner.exited:
            return
        runner.replace_reason = reason
        runner.suspended = True  # no new request for it (a retry included) while it stops
        logger.warning("[%s] replacing it: %s", runner.runner_id, reason)
        self._spawn(runner.stop(REPLACE_GRACE_SECONDS, reason), f"{runner.runner_id}-replace")

    # -- one runner's life ----------------------------------------------------------------------

    async def _lifecycle(self, runner: RunnerProcess) -> None:
        failures = 0
        try:
            while not self.stopping and not runner.retiring:
                await runner.start()
                if await runner.wait_ready(self.startup_timeout):
                    failures = 0
                    self.on_ready()
                elif runner.exit_code is None and not runner.retiring:
                    reason = f"startup_timeout ({self.startup_timeout:.0f} s) exceeded"
                    logger.error("[%s] %s: killing it", runner.runner_id, reason)
                    await runner.stop(REPLACE_GRACE_SECONDS, reason)
                code = await runner.wait_exit()
                if self.stopping or runner.retiring:
                    break
                runner.in_flight = 0
                runner.last_exit_reason = runner.stop_reason or exit_reason(code)
                if runner.replace_reason is not None:
                    runner.replace_reason = None
                    runner.state = RunnerState.PENDING
                    continue
                failures += 1
                delay = failure_backoff(failures, self.backoff_step)
                logger.error(
                    "[%s] failed (%s); restarting in %.0f s",
                    runner.runner_id,
                    runner.last_exit_reason,
                    delay,
                )
                runner.state = RunnerState.FAILURE_DELAY
                runner.restart_at = asyncio.get_running_loop().time() + delay
                await asyncio.sleep(delay)
                runner.restart_at = None
        finally:
            runner.state = RunnerState.TERMINATED
            self.gpu_pool.release(runner.gpus)
            runner.gpus = []
            self._forget_old_runners()

    def _forget_old_runners(self) -> None:
        finished = [r for r in self.runners if r.state == RunnerState.TERMINATED]
        for runner in finished[:-TERMINATED_KEPT]:
            self.runners.remove(runner)

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
