"""The supervisor: fal's crash back-off, and each runner's lifecycle over a fake backend
(start, ready, crash and back-off, startup_timeout, replace, retire, lost connections, stop),
in milliseconds and without processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.supervisor import TERMINATED_KEPT, Supervisor, failure_backoff

# -- failure_backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "seconds"), [(0, 0.0), (1, 30.0), (2, 60.0), (19, 570.0), (20, 600.0), (99, 600.0)]
)
def test_failure_backoff(failures: int, seconds: float) -> None:
    assert failure_backoff(failures) == seconds


# -- one runner's life, over a fake backend (no processes) -----------------------------------------


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

    async def start(self, runner_id: str, gpus: list[str]) -> FakeInstance:
        instance = FakeInstance(runner_id, len(self.instances), self.obeys_terminate)
        self.instances.append(instance)
        if self.ready_at_once:
            instance.become_ready()
        return instance


async def until(condition: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def supervisor(
    backend: FakeBackend, startup_timeout: float = 5.0, gpus: list[str] | None = None
) -> tuple[Supervisor, list[str]]:
    """A supervisor with back-off steps and grace periods of milliseconds; its ready calls."""
    readies: list[str] = []
    made = Supervisor(
        backend,
        GpuPool(gpus or [], 1),
        Path("/nonexistent/run"),
        startup_timeout,
        grace_seconds=0.05,
        on_ready=lambda: readies.append("ready"),
        backoff_step=0.01,
        lost_runner_grace=0.01,
    )
    return made, readies


def states(runner: Runner) -> list[RunnerState]:
    return [state for _, state in runner.state_history]


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
        assert runner.suspended and not runner.accepts_requests
        fleet.replace(runner, "again")  # already being replaced: nothing more
        await until(lambda: len(backend.instances) == 2, "the new instance")
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE again")
        assert backend.instances[0].terminated and not runner.suspended
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
