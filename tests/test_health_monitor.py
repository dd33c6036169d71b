"""fal's ``HealthCheck`` schedule: when a runner is due a check, and failures in a row per start."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest

from minifal.endpoints import HealthCheck
from minifal.fleet.health_monitor import HealthMonitor

pytestmark = pytest.mark.unit


@dataclass
class FakeRunner:
    runner_id: str = "runner-0"
    accepts_requests: bool = True
    ready_at: float | None = 100.0


def monitor(check: HealthCheck, interval: float = 15.0) -> HealthMonitor:
    async def make() -> HealthMonitor:
        async with httpx.AsyncClient() as client:
            return HealthMonitor("/health-check", check, list, lambda *_: None, client, interval)

    return asyncio.run(make())


def test_due_after_the_start_period_then_every_interval() -> None:
    checks = monitor(HealthCheck(start_period_seconds=30), interval=15.0)
    runner = FakeRunner(ready_at=100.0)
    assert not checks.due(runner, 129.9)  # still in its start period
    assert checks.due(runner, 130.0)
    checks.last_check[runner.runner_id] = 130.0
    assert not checks.due(runner, 144.9)
    assert checks.due(runner, 145.0)


def test_never_due_for_a_runner_not_ready_or_not_taking_requests() -> None:
    checks = monitor(HealthCheck(start_period_seconds=0))
    assert not checks.due(FakeRunner(ready_at=None), 1000.0)
    assert not checks.due(FakeRunner(accepts_requests=False), 1000.0)


def test_call_regularly_false_checks_once_per_start() -> None:
    checks = monitor(HealthCheck(start_period_seconds=0, call_regularly=False), interval=1.0)
    runner = FakeRunner(ready_at=100.0)
    assert checks.due(runner, 100.0)
    checks.last_check[runner.runner_id] = 100.0
    assert not checks.due(runner, 500.0)
    runner.ready_at = 600.0  # restarted: its new start gets its one check
    assert checks.due(runner, 600.0)


def test_failures_count_in_a_row_and_from_zero_after_a_restart() -> None:
    checks = monitor(HealthCheck())
    runner = FakeRunner(ready_at=100.0)
    assert [checks.record(runner, healthy=False) for _ in range(2)] == [1, 2]
    assert checks.record(runner, healthy=True) == 0
    assert checks.record(runner, healthy=False) == 1
    runner.ready_at = 200.0
    assert checks.record(runner, healthy=False) == 1
