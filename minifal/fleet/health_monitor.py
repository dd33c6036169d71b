"""fal's ``HealthCheck``: the gateway calls the app's health-check endpoint on every ready runner.

After ``start_period_seconds`` from ready, every ``interval`` seconds (fal: 15; once only when
``call_regularly`` is false), a POST with ``timeout_seconds``; a non-2xx answer or a timeout is a
failure, and ``failure_threshold`` failures in a row replace the runner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import httpx

from minifal.endpoints import HealthCheck
from minifal.fleet.runner_process import RunnerProcess
from minifal.runner_contract import ENDPOINT_HEADER

logger = logging.getLogger("minifal.fleet")

ENV_INTERVAL = "MINIFAL_HEALTH_CHECK_INTERVAL"
DEFAULT_INTERVAL_SECONDS = 15.0
TICK_SECONDS = 0.5


class HealthMonitor:
    def __init__(
        self,
        path: str,
        check: HealthCheck,
        runners: Callable[[], list[RunnerProcess]],
        replace: Callable[[RunnerProcess, str], None],
        client: httpx.AsyncClient,
    ) -> None:
        self.path = path
        self.start_period = float(check.start_period_seconds)
        self.timeout = float(check.timeout_seconds)
        self.threshold = check.failure_threshold
        self.call_regularly = check.call_regularly
        self.interval = float(os.environ.get(ENV_INTERVAL, DEFAULT_INTERVAL_SECONDS))
        self.runners = runners
        self.replace = replace
        self.client = client
        self._checks: dict[str, asyncio.Task[None]] = {}

    def due(self, runner: RunnerProcess, now: float) -> bool:
        if not runner.accepts_requests or runner.ready_at is None:
            return False
        if runner.runner_id in self._checks or now - runner.ready_at < self.start_period:
            return False
        if runner.last_health_check >= runner.ready_at and not self.call_regularly:
            return False
        return now - runner.last_health_check >= self.interval

    async def run(self) -> None:
        """The monitor loop; the gateway owns it and cancels it (and its checks) at shutdown."""
        try:
            while True:
                now = time.time()
                for runner in self.runners():
                    if self.due(runner, now):
                        runner.last_health_check = now
                        task = asyncio.create_task(self._check(runner))
                        self._checks[runner.runner_id] = task
                        task.add_done_callback(
                            lambda _, rid=runner.runner_id: self._checks.pop(rid, None)
                        )
                await asyncio.sleep(TICK_SECONDS)
        finally:
            for task in list(self._checks.values()):
                task.cancel()

    async def _check(self, runner: RunnerProcess) -> None:
        try:
            response = await self.client.post(
                f"{runner.url}{self.path}",
                json={},
                headers={ENDPOINT_HEADER: self.path},
                timeout=self.timeout,
            )
            healthy = response.is_success
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            healthy, problem = False, f"{type(exc).__name__}"
        if healthy:
            runner.health_failures = 0
            return
        runner.health_failures += 1
        logger.warning(
            "[%s] health check %s failed (%s), %d/%d",
            runner.runner_id,
            self.path,
            problem,
            runner.health_failures,
            self.threshold,
        )
        if runner.health_failures >= self.threshold:
            self.replace(runner, f"health check failed {runner.health_failures} times ({problem})")
