"""Suspending idle runners to host memory: the scaling policy, the supervisor's state machine
over a fake backend and a fake driver (the CUDA checkpoint API cannot run on CPU CI: the fake
stands in for it, and tests/test_suspension_gpu.py runs the real one on a GPU), the driver's
detection and error messages, and how /runners and `minifal runners` show it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fleet_fakes import FakeBackend, FakeDriver, states, supervisor, until
from in_process import manifest_of

import minifal as fal
from minifal.cli.main import build_parser
from minifal.cli.runners_table import format_runners
from minifal.fleet.backends.cuda_checkpoint import (
    describe_error,
    host_cuda_checkpoint,
    load_cuda_checkpoint,
)
from minifal.fleet.gateway import PHASES, Gateway, GatewayOptions, choose_suspender
from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.runner_offload import OffloadError
from minifal.fleet.runner_suspension import DEFAULT_SLEEP_SECONDS, may_sleep
from minifal.fleet.scaler import FleetSnapshot, Phase, RunnerView, ScalingSettings, decide
from minifal.offload.suspension import Offloaded, Released

pytestmark = pytest.mark.unit

GIB = 2**30

# -- the policy (pure) ----------------------------------------------------------------------------


def idle(runner_id: str, since: float) -> RunnerView:
    return RunnerView(runner_id, Phase.READY, 0, since)


def asleep(runner_id: str, since: float, memory: int = GIB) -> RunnerView:
    return RunnerView(runner_id, Phase.SUSPENDED, 0, None, since, memory)


SCALE_TO_ZERO = ScalingSettings(min_concurrency=0, keep_alive=10.0, suspend=True)


def test_an_idle_runner_past_keep_alive_is_suspended_not_stopped() -> None:
    snapshot = FleetSnapshot(100.0, (idle("a", 80.0), idle("b", 95.0)))
    decision = decide(snapshot, SCALE_TO_ZERO)
    assert decision.suspend == ("a",) and decision.stop == ()
    without = decide(snapshot, ScalingSettings(min_concurrency=0, keep_alive=10.0))
    assert without.stop == ("a",) and without.suspend == ()


def test_demand_resumes_suspended_runners_before_it_starts_new_ones() -> None:
    runners = (asleep("old", 10.0), asleep("new", 50.0))
    one = decide(FleetSnapshot(100.0, runners, queued_waits=(0.0,)), SCALE_TO_ZERO)
    assert one.resume == ("new",) and one.start == 0  # the most recently suspended first
    three = decide(FleetSnapshot(100.0, runners, queued_waits=(0.0,) * 3), SCALE_TO_ZERO)
    assert set(three.resume) == {"old", "new"} and three.start == 1


def test_a_suspended_runner_is_stopped_after_its_longer_expiry() -> None:
    settings = ScalingSettings(min_concurrency=0, suspend=True, suspended_keep_alive=600.0)
    snapshot = FleetSnapshot(1000.0, (asleep("stale", 300.0), asleep("fresh", 900.0)))
    decision = decide(snapshot, settings)
    assert decision.stop == ("stale",)
    # and one on its way out is not resumed
    busy = FleetSnapshot(1000.0, snapshot.runners, queued_waits=(0.0,))
    assert decide(busy, settings).resume == ("fresh",)


def test_suspended_runners_beyond_the_memory_budget_are_stopped_oldest_first() -> None:
    settings = ScalingSettings(min_concurrency=0, suspend=True, suspended_memory_budget=10 * GIB)
    runners = (asleep("a", 1.0, 6 * GIB), asleep("b", 2.0, 6 * GIB), asleep("c", 3.0, 3 * GIB))
    assert decide(FleetSnapshot(10.0, runners), settings).stop == ("a",)


def test_suspension_states_are_phases_the_scaler_understands() -> None:
    assert PHASES[RunnerState.SUSPENDING] is Phase.LEAVING  # capacity going away
    assert PHASES[RunnerState.SUSPENDED] is Phase.SUSPENDED
    assert PHASES[RunnerState.RESUMING] is Phase.STARTING  # capacity on its way


# -- the supervisor's state machine (fake backend, fake driver) ----------------------------------


def test_suspend_then_resume_keeps_the_same_process() -> None:
    async def scenario() -> None:
        driver = FakeDriver()
        fleet, readies = supervisor(FakeBackend(), gpus=["0"], suspender=driver)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        pid = runner.pid
        assert fleet.suspend(runner)
        assert runner.state is RunnerState.SUSPENDING and not runner.accepts_requests
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
        assert runner.suspensions.suspends == 1 and runner.suspensions.suspended_since
        assert runner.gpus == ["0"]  # it keeps its GPU: a resume goes back there
        assert fleet.resume(runner)
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE again")
        assert runner.pid == pid and runner.accepts_requests
        assert driver.calls == [("suspend", pid), ("resume", pid)]
        assert readies == ["ready", "ready"]  # the scheduler hears of both
        assert states(runner)[-4:] == [
            RunnerState.SUSPENDING,
            RunnerState.SUSPENDED,
            RunnerState.RESUMING,
            RunnerState.IDLE,
        ]
        assert runner.suspensions.resumes == 1 and runner.suspensions.host_memory_bytes is None
        await fleet.stop()

    asyncio.run(scenario())


def test_only_an_idle_runner_is_suspended() -> None:
    async def scenario() -> None:
        fleet, _ = supervisor(FakeBackend(ready_at_once=False), suspender=FakeDriver())
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.SETUP, "SETUP")
        assert not fleet.suspend(runner)  # still setting up
        fleet.backend.instances[0].become_ready()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        runner.took_request(0.0)
        assert not fleet.suspend(runner)  # a request in flight
        runner.finished_request(0.0)
        without, _ = supervisor(FakeBackend())
        other = without.add_runner()
        await until(lambda: other.state is RunnerState.IDLE, "IDLE")
        assert not without.suspend(other)  # no driver: never
        await fleet.stop()
        await without.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("step", ["suspend", "resume"])
def test_a_failed_step_is_a_crash_then_a_fresh_start(step: str) -> None:
    async def scenario() -> None:
        driver = FakeDriver()
        driver.fail = step
        backend = FakeBackend()
        fleet, _ = supervisor(backend, suspender=driver)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.suspend(runner)
        if step == "resume":
            await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
            fleet.resume(runner)
        await until(lambda: len(backend.instances) == 2, "a new instance")
        assert backend.instances[0].killed
        assert f"{step} failed" in (runner.last_exit_reason or "")
        assert RunnerState.FAILURE_DELAY in states(runner)  # the crash back-off
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE on the new instance")
        await fleet.stop()

    asyncio.run(scenario())


def test_a_runner_that_does_not_answer_after_a_resume_is_replaced() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend, suspender=FakeDriver())
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
        backend.instances[0].healthy = False
        fleet.resume(runner)
        await until(lambda: len(backend.instances) == 2, "a new instance")
        assert "no answer after the restore" in (runner.last_exit_reason or "")
        await fleet.stop()

    asyncio.run(scenario())


def test_stopping_a_suspended_runner_kills_it_at_once() -> None:
    async def scenario() -> None:
        backend = FakeBackend(obeys_terminate=False)  # a teardown() that would hang on CUDA
        fleet, _ = supervisor(backend, suspender=FakeDriver())
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
        fleet.retire(runner, "suspended_keep_alive expired")
        await until(lambda: runner.state is RunnerState.TERMINATED, "TERMINATED")
        assert backend.instances[0].killed and not backend.instances[0].terminated
        await fleet.stop()

    asyncio.run(scenario())


# -- the driver: detection, messages --------------------------------------------------------------


def test_a_host_without_the_driver_says_why_and_falls_back() -> None:
    driver, why = load_cuda_checkpoint("libcuda-that-is-not-here.so.1")
    assert driver is None and "not found" in why
    assert choose_suspender("off", use_gpus=True) is None
    assert choose_suspender("on", use_gpus=False) is None


def test_the_host_probe_is_made_once_per_process_for_every_thread() -> None:
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: host_cuda_checkpoint(), range(8)))
    assert all(answer is answers[0] for answer in answers)
    assert host_cuda_checkpoint() is answers[0]


def test_error_codes_read_as_what_they_mean_here() -> None:
    assert "CUresult 909" in describe_error(None, 909) and "timed out" in describe_error(None, 909)
    assert describe_error(None, 12345) == "CUresult 12345"


# -- what people see ------------------------------------------------------------------------------


def test_runners_table_says_what_a_suspended_runner_holds() -> None:
    row = {
        "runner_id": "runner-0",
        "state": "SUSPENDED",
        "suspensions": {
            "suspends": 2,
            "resumes": 1,
            "last_suspend_s": 6.3,
            "last_resume_s": 1.9,
            "suspended_since": 1.0,
            "host_memory_bytes": 9 * GIB,
        },
    }
    text = format_runners({"app": "a", "run_id": "r", "runners": [row]})
    assert "SUSPENDED" in text
    assert "runner-0: suspended 2 time(s) (last 6.3s), resumed 1 time(s) (last 1.9s)" in text
    assert "holds 9.0 GiB of host memory" in text
    assert "asleep" not in text
    row["suspensions"] |= {"asleep": True, "pinned_bytes": 2 * GIB}
    text = format_runners({"app": "a", "run_id": "r", "runners": [row]})
    assert "(2.0 GiB of it pinned tensors); asleep: its CUDA context and graphs still on" in text
    assert "dropped" not in text
    row["suspensions"] |= {"asleep": False, "graphs_released": 3, "released_bytes": GIB}
    text = format_runners({"app": "a", "run_id": "r", "runners": [row]})
    assert "; 3 CUDA graph(s) dropped before its checkpoint (1.0 GiB given back)" in text


# -- offload before the checkpoint (the runner's half, faked; tests/test_offload.py has the real
# routes) ------------------------------------------------------------------------------------------


RELEASED = Released(graphs=3, reserved_before_bytes=3 * GIB, reserved_after_bytes=GIB)


class FakeOffloader:
    """Records its steps in the driver's list, so the order of both shows; fails when told
    (a failed release is None: ``RunnerOffload`` logs why and answers None)."""

    def __init__(self, calls: list[tuple[str, int]], answer: Offloaded | None) -> None:
        self.calls = calls
        self.answer = answer
        self.released: Released | None = RELEASED
        self.fail_restore = False

    async def offload(self, runner: Runner) -> Offloaded | None:
        self.calls.append(("offload", runner.pid or 0))
        return self.answer

    async def release(self, runner: Runner) -> Released | None:
        self.calls.append(("release", runner.pid or 0))
        return self.released

    async def restore(self, runner: Runner) -> dict[str, object]:
        self.calls.append(("restore", runner.pid or 0))
        if self.fail_restore:
            raise OffloadError("/_minifal/restore answered 500: CUDA_ERROR_OUT_OF_MEMORY")
        return {"copy_back": {"seconds": 0.05}}


def test_the_runner_offloads_before_the_checkpoint_and_restores_after_the_restore() -> None:
    async def scenario() -> None:
        driver = FakeDriver()
        offloaded = Offloaded(arenas=1, device_bytes=2 * GIB, host_bytes=2 * GIB)
        offloader = FakeOffloader(driver.calls, offloaded)
        fleet, _ = supervisor(FakeBackend(), suspender=driver, offloader=offloader)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        pid = runner.pid or 0
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
        assert runner.suspensions.pinned_bytes == 2 * GIB
        # checkpointed at once: its CUDA graphs were dropped first
        assert runner.suspensions.graphs_released == 3
        assert runner.suspensions.released_bytes == 2 * GIB
        fleet.resume(runner)
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE again")
        assert driver.calls == [
            ("offload", pid),
            ("release", pid),
            ("suspend", pid),
            ("resume", pid),
            ("restore", pid),
        ]
        assert runner.suspensions.pinned_bytes is None  # held while suspended only
        assert runner.suspensions.graphs_released is None
        offloader.answer = None  # the runner could not offload: the checkpoint takes all
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED again")
        assert runner.suspensions.pinned_bytes is None
        offloader.fail_restore = True
        fleet.resume(runner)
        await until(lambda: runner.state is RunnerState.FAILURE_DELAY, "a crash")
        assert "resume failed" in (runner.last_exit_reason or "")
        await fleet.stop()

    asyncio.run(scenario())


SMALL_LEFTOVER_ON_A_CARD = {"gpu_used_bytes": 4 * GIB, "gpu_total_bytes": 80 * GIB}


def test_a_runner_sleeps_only_where_what_it_leaves_on_its_gpu_is_small() -> None:
    sd_turbo = Offloaded(arenas=1, host_bytes=2 * GIB, **SMALL_LEFTOVER_ON_A_CARD)
    assert may_sleep(sd_turbo, 60.0)
    assert not may_sleep(sd_turbo, 0.0)  # --suspend-sleep 0
    kv_cache_left = Offloaded(arenas=1, gpu_used_bytes=60 * GIB, gpu_total_bytes=80 * GIB)
    assert not may_sleep(kv_cache_left, 60.0)  # would starve the next runner on that card
    assert not may_sleep(Offloaded(arenas=1), 60.0)  # the card's memory unknown
    assert not may_sleep(Offloaded(arenas=0, **SMALL_LEFTOVER_ON_A_CARD), 60.0)  # no arena
    assert not may_sleep(None, 60.0)  # the runner could not offload


def test_a_runner_that_offloaded_sleeps_on_its_gpu_then_is_checkpointed() -> None:
    """Asleep: no driver call at either end, the runner's own copy back only. Left asleep past
    ``sleep_seconds``: the driver's checkpoint takes the rest, and the resume restores it."""

    async def scenario() -> None:
        driver = FakeDriver()
        offloaded = Offloaded(
            arenas=1, device_bytes=2 * GIB, host_bytes=2 * GIB, **SMALL_LEFTOVER_ON_A_CARD
        )
        offloader = FakeOffloader(driver.calls, offloaded)
        fleet, readies = supervisor(
            FakeBackend(), suspender=driver, offloader=offloader, sleep_seconds=0.3
        )
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        pid = runner.pid or 0
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
        assert runner.suspensions.asleep and runner.suspensions.checkpoint_bytes is None
        assert runner.suspensions.pinned_bytes == 2 * GIB
        assert runner.suspensions.graphs_released is None  # asleep: its graphs kept
        fleet.resume(runner)  # within the sleep
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE again")
        assert driver.calls == [("offload", pid), ("restore", pid)]
        assert not runner.suspensions.asleep
        await asyncio.sleep(0.5)  # the late checkpoint of that suspension: not any more
        assert driver.calls == [("offload", pid), ("restore", pid)]

        fleet.suspend(runner)
        await until(lambda: ("suspend", pid) in driver.calls, "the checkpoint after the sleep")
        await until(lambda: not runner.suspensions.asleep, "checkpointed")
        assert runner.state is RunnerState.SUSPENDED
        assert runner.suspensions.graphs_released == 3
        assert runner.suspensions.released_bytes == 2 * GIB
        fleet.resume(runner)
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE a third time")
        assert driver.calls[2:] == [
            ("offload", pid),
            ("release", pid),  # right before the late checkpoint, not before the sleep
            ("suspend", pid),
            ("resume", pid),
            ("restore", pid),
        ]
        assert readies == ["ready", "ready", "ready"]
        await fleet.stop()

    asyncio.run(scenario())


def test_a_runner_that_offloaded_nothing_is_checkpointed_at_once_even_with_a_sleep() -> None:
    async def scenario() -> None:
        driver = FakeDriver()
        offloader = FakeOffloader(driver.calls, None)  # its App keeps no arena
        fleet, _ = supervisor(
            FakeBackend(), suspender=driver, offloader=offloader, sleep_seconds=60
        )
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
        assert not runner.suspensions.asleep
        assert driver.calls == [
            ("offload", runner.pid),
            ("release", runner.pid),
            ("suspend", runner.pid),
        ]
        await fleet.stop()

    asyncio.run(scenario())


def test_a_runner_that_cannot_release_is_checkpointed_as_it_is() -> None:
    """The release failed (an error, or no answer in time: ``RunnerOffload`` answers None):
    the late checkpoint goes on, and so does one at once."""

    async def scenario() -> None:
        driver = FakeDriver()
        offloaded = Offloaded(
            arenas=1, device_bytes=GIB, host_bytes=GIB, **SMALL_LEFTOVER_ON_A_CARD
        )
        offloader = FakeOffloader(driver.calls, offloaded)
        offloader.released = None
        fleet, _ = supervisor(
            FakeBackend(), suspender=driver, offloader=offloader, sleep_seconds=0.05
        )
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        pid = runner.pid or 0
        fleet.suspend(runner)
        await until(lambda: ("suspend", pid) in driver.calls, "the checkpoint after the sleep")
        await until(lambda: not runner.suspensions.asleep, "checkpointed")
        assert runner.state is RunnerState.SUSPENDED
        assert runner.suspensions.graphs_released is None
        fleet.resume(runner)
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE again")
        offloader.answer = None  # nothing offloaded: checkpointed at once
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED at once")
        assert driver.calls == [
            ("offload", pid),
            ("release", pid),
            ("suspend", pid),
            ("resume", pid),
            ("restore", pid),
            ("offload", pid),
            ("release", pid),
            ("suspend", pid),
        ]
        await fleet.stop()

    asyncio.run(scenario())


def test_a_failed_checkpoint_after_the_sleep_is_a_crash() -> None:
    async def scenario() -> None:
        driver = FakeDriver()
        driver.fail = "suspend"
        offloaded = Offloaded(
            arenas=1, device_bytes=GIB, host_bytes=GIB, **SMALL_LEFTOVER_ON_A_CARD
        )
        fleet, _ = supervisor(
            FakeBackend(),
            suspender=driver,
            offloader=FakeOffloader(driver.calls, offloaded),
            sleep_seconds=0.05,
        )
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.FAILURE_DELAY, "a crash")
        assert "checkpoint after the sleep failed" in (runner.last_exit_reason or "")
        await fleet.stop()

    asyncio.run(scenario())


def test_suspend_sleep_goes_from_the_command_line_to_the_runners_suspension(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "app.py"]).suspend_sleep == DEFAULT_SLEEP_SECONDS
    assert parser.parse_args(["run", "app.py", "--suspend-sleep", "0"]).suspend_sleep == 0.0
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["run", "app.py", "--suspend-sleep", bad])
        assert exited.value.code == 2
        assert "--suspend-sleep" in capsys.readouterr().err
    gateway = Gateway(
        manifest_of(Sleeper),
        GatewayOptions(
            app_reference="Sleeper",
            data_dir=tmp_path,
            run_id="r",
            public_url="http://testserver/",
            scaling=ScalingSettings(min_concurrency=0),
            gpus=["0"],
            echo_output=False,
            suspend_sleep_s=5.0,
        ),
        backend=FakeBackend(),
        suspender=FakeDriver(),
    )
    assert gateway.supervisor.suspension is not None
    assert gateway.supervisor.suspension.sleep_seconds == 5.0


class Sleeper(fal.App):
    machine_type = "GPU-H100"
