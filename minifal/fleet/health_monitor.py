"""fal's ``HealthCheck``: the gateway calls the app's health-check endpoint on every ready runner.

After ``start_period_seconds`` from ready, every ``interval`` seconds (fal: 15; once only when
``call_regularly`` is false), a request (POST, or the check's ``method``) with
``timeout_seconds``; a non-2xx answer or a timeout is a failure, and ``failure_threshold``
failures in a row replace the runner. The monitor keeps its own bookkeeping (last check,
failures in a row of each start); it changes a runner only by asking the supervisor to replace
it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from minifal.endpoints import HealthCheck
from minifal.fleet.runner import Runner
from minifal.host import envs
from minifal.runner_contract import ENDPOINT_HEADER

logger = logging.getLogger("minifal.fleet")

DEFAULT_INTERVAL_SECONDS = envs.HEALTH_CHECK_INTERVAL.default
TICK_SECONDS = 0.5


class Checkable(Protocol):
    """What ``due()`` reads of a runner."""

    @property
    def runner_id(self) -> str: ...

    @property
    def accepts_requests(self) -> bool: ...

    @property
    def ready_at(self) -> float | None: ...


class HealthMonitor:
    def __init__(
        self,
        path: str,
        check: HealthCheck,
        runners: Callable[[], list[Runner]],
        replace: Callable[[Runner, str], None],
        client: httpx.AsyncClient,
        interval: float | None = None,
    ) -> None:
        self.path = path
        self.start_period = float(check.start_period_seconds)
        self.timeout = float(check.timeout_seconds)
        self.threshold = check.failure_threshold
        self.call_regularly = check.call_regularly
        self.method = check.probe_method
        if interval is None:
            interval = envs.HEALTH_CHECK_INTERVAL.get()
        self.interval = interval
        self.runners = runners
        self.replace = replace
        self.client = client
        self.last_check: dict[str, float] = {}
        """When each runner was last checked (``time.time()``)."""
        self.failures: dict[str, tuple[float, int]] = {}
        """Per runner: how many checks failed in a row, and the ``ready_at`` of the start they
        belong to (a new start counts from zero)."""
        self._checks: dict[str, asyncio.Task[None]] = {}

    def due(self, runner: Checkable, now: float) -> bool:
        if not runner.accepts_requests or runner.ready_at is None:
            return False
        if runner.runner_id in self._checks or now - runner.ready_at < self.start_period:
            return False
        last = self.last_check.get(runner.runner_id, 0.0)
        if last >= runner.ready_at and not self.call_regularly:
            return False
        return now - last >= self.interval

    def record(self, runner: Checkable, healthy: bool) -> int:
        """Count a check's outcome; returns the failures in a row of the runner's current start."""
        ready_at = runner.ready_at or 0.0
        since, count = self.failures.get(runner.runner_id, (ready_at, 0))
        count = 0 if healthy or since != ready_at else count
        count += 0 if healthy else 1
        self.failures[runner.runner_id] = (ready_at, count)
        return count

    async def run(self) -> None:
        """The monitor loop; the gateway owns it and cancels it (and its checks) at shutdown."""
        try:
            while True:
                now = time.time()
                runners = self.runners()
                self._forget_all_but({runner.runner_id for runner in runners})
                for runner in runners:
                    if self.due(runner, now):
                        self.last_check[runner.runner_id] = now
                        task = asyncio.create_task(self._check(runner))
                        self._checks[runner.runner_id] = task
                        task.add_done_callback(
                            lambda _, rid=runner.runner_id: self._checks.pop(rid, None)
                        )
                await asyncio.sleep(TICK_SECONDS)
        finally:
            for task in list(self._checks.values()):
                task.cancel()

    def _forget_all_but(self, runner_ids: set[str]) -> None:
        """Runners that ended for good are never checked again (their ids are not reused)."""
        for table in (self.last_check, self.failures):
            for runner_id in table.keys() - runner_ids:
                del table[runner_id]

    async def _check(self, runner: Runner) -> None:
        try:
            response = await self.client.request(
                self.method,
                f"{runner.url}{self.path}",
                json={} if self.method == "POST" else None,
                headers={ENDPOINT_HEADER: self.path},
                timeout=self.timeout,
            )
            healthy = response.is_success
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            healthy, problem = False, f"{type(exc).__name__}"
        failures = self.record(runner, healthy)
        if healthy:
            return
        logger.warning(
            "[%s] health check %s failed (%s), %d/%d",
            runner.runner_id,
            self.path,
            problem,
            failures,
            self.threshold,
        )
        if failures >= self.threshold:
            self.replace(runner, f"health check failed {failures} times ({problem})")
