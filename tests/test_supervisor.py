"""The supervisor: fal's crash back-off, and each runner's lifecycle over a fake backend
(start, ready, crash and back-off, startup_timeout, replace, retire, lost connections, stop),
in milliseconds and without processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fleet_fakes import FakeBackend, states, supervisor, until

from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.supervisor import TERMINATED_KEPT, failure_backoff

pytestmark = pytest.mark.unit

# -- failure_backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "seconds"), [(0, 0.0), (1, 30.0), (2, 60.0), (19, 570.0), (20, 600.0), (99, 600.0)]
)
def test_failure_backoff(failures: int, seconds: float) -> None:
    assert failure_backoff(failures) == seconds


def test_a_runner_starts_sets_up_and_becomes_ready() -> None:
    async def scenario() -> None:
        backend = FakeBackend(ready_at_once=False)
        fleet, readies = supervisor(backend, gpus=["0"])
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.SETUP, "SETUP")
        assert not runner.accepts_requests and readies == []
        backend.instances[0].become_ready()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        assert readies == ["ready"] and runner.accepts_requests
        assert runner.url == "http://runner-0.invalid" and runner.node == "fake"
        assert runner.gpus == ["0"] and runner.startup_seconds is not None
        assert states(runner) == [RunnerState.PENDING, RunnerState.SETUP, RunnerState.IDLE]
        await fleet.stop()
        assert runner.state is RunnerState.TERMINATED and runner.gpus == []
        assert fleet.gpu_pool.users["0"] == 0

    asyncio.run(scenario())


def test_a_crash_backs_off_then_restarts_with_the_exit_reason() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        runner.took_request(1.0)
        backend.instances[0].exit(3)  # EXIT_SETUP_FAILED
        await until(lambda: runner.state is RunnerState.FAILURE_DELAY, "FAILURE_DELAY")
        assert runner.last_exit_reason == "setup() failed (traceback in the runner's log)"
        assert runner.in_flight == 0 and runner.restart_at is not None
        await until(lambda: len(backend.instances) == 2, "the restart")
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE again")
        assert runner.restart_at is None and runner.pid == 1001
        backend.instances[1].exit(-9)
        await until(lambda: runner.state is RunnerState.FAILURE_DELAY, "FAILURE_DELAY again")
        assert runner.last_exit_reason == "killed by signal 9"
        await fleet.stop()

    asyncio.run(scenario())


def test_a_runner_not_ready_within_startup_timeout_is_stopped_and_backs_off() -> None:
    async def scenario() -> None:
        backend = FakeBackend(ready_at_once=False)
        fleet, readies = supervisor(backend, startup_timeout=0.02)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.FAILURE_DELAY, "FAILURE_DELAY")
        assert backend.instances[0].terminated and readies == []
        assert runner.last_exit_reason == "startup_timeout (0 s) exceeded"
        await fleet.stop()

    asyncio.run(scenario())


def test_replace_restarts_at_once_without_back_off() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, readies = supervisor(backend)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.replace(runner, "health check failed 3 times (HTTP 500)")
        assert runner.withheld and not runner.accepts_requests
        fleet.replace(runner, "again")  # already being replaced: nothing more
        await until(lambda: len(backend.instances) == 2, "the new instance")
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE again")
        assert backend.instances[0].terminated and not runner.withheld
        assert runner.last_exit_reason == "health check failed 3 times (HTTP 500)"
        assert RunnerState.FAILURE_DELAY not in states(runner)
        assert runner.replace_reason is None and readies == ["ready", "ready"]
        await fleet.stop()

    asyncio.run(scenario())


def test_retire_drains_and_ends_the_lifecycle() -> None:
    async def scenario() -> None:
        backend = FakeBackend(obeys_terminate=False)
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        runner.took_request(1.0)
        fleet.retire(runner, "keep_alive expired")
        await until(lambda: runner.state is RunnerState.DRAINING, "DRAINING")
        runner.finished_request(2.0)
        backend.instances[0].exit(0)  # drained, teardown() ran
        await until(lambda: runner.state is RunnerState.TERMINATED, "TERMINATED")
        assert fleet.live_runners == [] and len(backend.instances) == 1
        assert runner.last_exit_reason == "keep_alive expired"
        await fleet.stop()

    asyncio.run(scenario())


def test_a_runner_that_ignores_terminate_is_killed_after_the_grace_period() -> None:
    async def scenario() -> None:
        backend = FakeBackend(obeys_terminate=False)
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        await fleet.stop()
        assert backend.instances[0].terminated and backend.instances[0].killed
        assert runner.state is RunnerState.TERMINATED
        assert runner.last_exit_reason == "fleet shutdown"

    asyncio.run(scenario())


def test_a_lost_connection_replaces_a_runner_still_alive() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.connection_lost(runner, ConnectionError("reset"))
        assert not runner.accepts_requests
        await until(lambda: len(backend.instances) == 2, "the replacement")
        assert runner.last_exit_reason == "lost connection (ConnectionError)"
        await until(lambda: runner.accepts_requests, "ready again")
        await fleet.stop()

    asyncio.run(scenario())


def test_a_lost_connection_to_a_dead_runner_is_a_crash() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.connection_lost(runner, ConnectionError("reset"))
        backend.instances[0].exit(-11)
        await until(lambda: runner.state is RunnerState.FAILURE_DELAY, "FAILURE_DELAY")
        assert runner.last_exit_reason == "killed by signal 11"
        assert not backend.instances[0].terminated
        await fleet.stop()

    asyncio.run(scenario())


def test_finished_runners_are_forgotten_beyond_the_last_few() -> None:
    async def scenario() -> None:
        fleet, _ = supervisor(FakeBackend())
        runners = [fleet.add_runner() for _ in range(TERMINATED_KEPT + 3)]
        await until(lambda: all(r.state is RunnerState.IDLE for r in runners), "all IDLE")
        for runner in runners:
            fleet.retire(runner, "keep_alive expired")
        await until(lambda: fleet.live_runners == [], "every runner to end")
        assert [r.runner_id for r in fleet.runners] == [r.runner_id for r in runners[3:]]
        await fleet.stop()

    asyncio.run(scenario())


def test_a_runner_drained_for_good_says_why_even_if_its_exit_is_not_seen(tmp_path: Path) -> None:
    """A runner of a failed revision stopped during its setup: ``minifal runners`` says why,
    whichever way its lifecycle ends (found flaky in tests/test_revision_processes.py)."""
    runner = Runner("runner-0", [], tmp_path / "events.jsonl")
    runner.draining("revision r2-abc failed")
    assert runner.state == RunnerState.DRAINING
    assert runner.last_exit_reason == "revision r2-abc failed"
