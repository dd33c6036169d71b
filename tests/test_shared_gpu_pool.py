"""Two apps' gateways on one GPU through ``SharedGpuPool``, in process: the real gateways,
schedulers, supervisors, scalers and arbiter; runners are the apps' own ASGI apps
(``tests/in_process.py``) started by the fake backend, and suspended by the fake checkpoint
driver of ``fleet_fakes`` (the CUDA driver cannot run on this CPU machine)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fleet_fakes import FakeBackend, FakeDriver, supervisor, until
from in_process import InProcessRunners, manifest_of
from pydantic import BaseModel

import minifal as fal
from minifal.fleet.gateway import Gateway, GatewayOptions
from minifal.fleet.gpu_arbiter import RESIDENT, ArbiterSettings
from minifal.fleet.http_api import build_gateway_app
from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.scaler import ScalingSettings
from minifal.fleet.shared_gpu_pool import SharedGpuPool, hold_of
from minifal.runner.asgi import build_asgi_app

pytestmark = pytest.mark.unit

ANSWER_TIMEOUT_S = 10.0
GIB = 2**30


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    app: str
    text: str


class Alpha(fal.App):
    """``/hold`` keeps its runner busy until the test sets ``release``."""

    machine_type = "GPU-H100"
    release = threading.Event()

    @fal.endpoint("/")
    def answer(self, question: Question) -> Answer:
        return Answer(app="alpha", text=question.text)

    @fal.endpoint("/hold")
    def hold(self, question: Question) -> Answer:
        released = self.release.wait(ANSWER_TIMEOUT_S)
        return Answer(app="alpha", text=f"released={released}")


class Beta(fal.App):
    machine_type = "GPU-H100"

    @fal.endpoint("/")
    def answer(self, question: Question) -> Answer:
        return Answer(app="beta", text=question.text)


def pooled_gateway(app: fal.App, data_dir: Path, driver: FakeDriver | None) -> Gateway:
    app_class = type(app)
    return Gateway(
        manifest_of(app_class),
        GatewayOptions(
            app_reference=app_class.__name__,
            data_dir=data_dir,
            run_id=app_class.__name__,
            public_url="http://testserver/",
            scaling=ScalingSettings(min_concurrency=0, keep_alive=60.0, hard_cap=1),
            gpus=["0"],
            echo_output=False,
        ),
        backend=FakeBackend(),
        runner_client=InProcessRunners(build_asgi_app(app)),  # type: ignore[arg-type]
        suspender=driver,
    )


@contextlib.asynccontextmanager
async def one_gpu_two_apps(
    tmp_path: Path, suspend: bool, pool: SharedGpuPool | None = None
) -> AsyncIterator[tuple[Gateway, Gateway, list[str]]]:
    """Gateways of Alpha and Beta sharing GPU 0 (``pool``), started; and what a watcher saw go
    wrong: any moment at which two runners held the GPU."""
    pool = pool or SharedGpuPool(["0"])
    alpha = pooled_gateway(Alpha(), tmp_path, FakeDriver() if suspend else None)
    beta = pooled_gateway(Beta(), tmp_path, FakeDriver() if suspend else None)
    pool.join("alpha", alpha)
    pool.join("beta", beta)
    for gateway in (alpha, beta):
        await gateway.start()
    await pool.start()
    overlaps: list[str] = []

    async def watch() -> None:
        while True:
            holders = [
                f"{gateway.manifest.app_name}/{runner.runner_id}"
                for gateway in (alpha, beta)
                for runner in gateway.supervisor.runners
                if hold_of(runner) in RESIDENT
            ]
            if len(holders) > 1:
                overlaps.append(" and ".join(holders))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        yield alpha, beta, overlaps
    finally:
        watcher.cancel()
        await pool.stop()
        for gateway in (alpha, beta):
            await gateway.stop()


async def ask(gateway: Gateway, text: str, path: str = "/") -> dict[str, str]:
    transport = httpx.ASGITransport(app=build_gateway_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await asyncio.wait_for(
            client.post(path, json={"text": text}), timeout=ANSWER_TIMEOUT_S
        )
    assert response.status_code == 200, response.text
    return response.json()


def only_runner(gateway: Gateway) -> Runner:
    (runner,) = gateway.supervisor.runners
    return runner


def test_an_idle_runner_of_one_app_is_suspended_for_the_other_and_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with one_gpu_two_apps(tmp_path, suspend=True) as (alpha, beta, overlaps):
            assert await ask(alpha, "one") == {"app": "alpha", "text": "one"}
            a = only_runner(alpha)
            assert a.gpus == ["0"] and a.state is RunnerState.IDLE

            # Beta's request, the GPU held by Alpha's idle runner: Alpha's runner is suspended,
            # Beta's started there, Beta's request answered.
            assert await ask(beta, "two") == {"app": "beta", "text": "two"}
            b = only_runner(beta)
            assert a.state is RunnerState.SUSPENDED and a.gpus == ["0"]  # parked on its GPU
            assert b.gpus == ["0"]
            assert alpha.supervisor.suspension.suspender.calls == [("suspend", a.pid)]  # type: ignore[union-attr]

            # The reverse: Beta's runner is suspended, Alpha's resumed (the same process).
            pid = a.pid
            assert await ask(alpha, "three") == {"app": "alpha", "text": "three"}
            assert only_runner(alpha) is a and a.pid == pid and a.state is RunnerState.IDLE
            assert len(alpha.supervisor.backend.instances) == 1  # type: ignore[attr-defined]
            assert [call for call, _ in alpha.supervisor.suspension.suspender.calls] == [  # type: ignore[union-attr]
                "suspend",
                "resume",
            ]
            await until(lambda: b.state is RunnerState.SUSPENDED, "Beta's runner suspended")
            assert overlaps == []

    asyncio.run(scenario())


def test_without_suspension_the_idle_runner_is_stopped_and_started_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with one_gpu_two_apps(tmp_path, suspend=False) as (alpha, beta, overlaps):
            assert (await ask(alpha, "one"))["app"] == "alpha"
            first = only_runner(alpha)
            assert (await ask(beta, "two"))["app"] == "beta"
            assert first.state is RunnerState.TERMINATED
            assert "GPU for beta" in (first.last_exit_reason or "")
            assert (await ask(alpha, "three"))["app"] == "alpha"
            live = [r for r in alpha.supervisor.runners if r.state is not RunnerState.TERMINATED]
            assert len(live) == 1 and live[0] is not first  # a fresh start
            assert overlaps == []

    asyncio.run(scenario())


def test_suspended_runners_over_the_pools_host_memory_budget_are_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake runners are no processes: what each holds once suspended is given here.
    monkeypatch.setattr("minifal.fleet.runner_suspension.resident_bytes", lambda pid: 6 * GIB)
    pool = SharedGpuPool(["0"], host_memory_budget=4 * GIB)

    async def scenario() -> None:
        async with one_gpu_two_apps(tmp_path, suspend=True, pool=pool) as (alpha, beta, overlaps):
            assert (await ask(alpha, "one"))["app"] == "alpha"
            first = only_runner(alpha)
            assert (await ask(beta, "two"))["app"] == "beta"
            await until(lambda: first.state is RunnerState.TERMINATED, "stopped for the budget")
            assert first.suspensions.suspends == 1
            assert "host memory budget" in (first.last_exit_reason or "")
            assert (await ask(alpha, "three"))["app"] == "alpha"  # a fresh start
            assert len(alpha.supervisor.backend.instances) == 2  # type: ignore[attr-defined]
            assert overlaps == []

    asyncio.run(scenario())


def test_a_busy_app_is_drained_for_an_app_starved_past_starvation_wait(tmp_path: Path) -> None:
    pool = SharedGpuPool(["0"], settings=ArbiterSettings(starvation_wait=0.3))
    Alpha.release.clear()

    async def scenario() -> None:
        async with one_gpu_two_apps(tmp_path, suspend=True, pool=pool) as (alpha, beta, overlaps):
            held = asyncio.create_task(ask(alpha, "held", "/hold"))
            await until(lambda: alpha.supervisor.runners != [], "Alpha's runner")
            a = only_runner(alpha)
            await until(lambda: a.in_flight == 1, "Alpha's runner busy")
            starved = asyncio.create_task(ask(beta, "starved"))
            # Past starvation_wait, Alpha's busy runner takes no new request and is stopped
            # once its request ends; the request in flight is answered, never cut off.
            await until(lambda: a.state is RunnerState.DRAINING, "drained", ANSWER_TIMEOUT_S)
            assert not starved.done() and a.in_flight == 1
            Alpha.release.set()
            assert await held == {"app": "alpha", "text": "released=True"}
            assert (await starved)["app"] == "beta"
            assert a.state is RunnerState.TERMINATED and "starvation_wait" in (
                a.last_exit_reason or ""
            )
            assert overlaps == []

    asyncio.run(scenario())


def test_granted_gpus_are_counted_in_the_fleets_pool_until_their_runner_ends() -> None:
    async def scenario() -> None:
        fleet, _ = supervisor(FakeBackend(), gpus=["0", "1"])
        granted = fleet.add_runner(gpus=["1"])
        assert granted.gpus == ["1"] and fleet.gpu_pool.users == {"0": 0, "1": 1}
        own = fleet.add_runner()  # the fleet's own choice sees GPU 1 in use
        assert own.gpus == ["0"] and fleet.gpu_pool.users == {"0": 1, "1": 1}
        fleet.retire(granted, "test")
        await until(lambda: granted.state is RunnerState.TERMINATED, "granted runner stopped")
        assert fleet.gpu_pool.users == {"0": 1, "1": 0}
        await fleet.stop()
        assert fleet.gpu_pool.users == {"0": 0, "1": 0}

    asyncio.run(scenario())


def test_a_gpu_let_go_is_granted_at_once_not_at_the_next_tick(tmp_path: Path) -> None:
    """The pool's own tick is made an hour long: the switch still happens, woken by the
    request left waiting (the reclaim) and by the suspended runner letting go (the grant)."""
    pool = SharedGpuPool(["0"], every=3600.0)

    async def scenario() -> None:
        async with one_gpu_two_apps(tmp_path, suspend=True, pool=pool) as (alpha, beta, overlaps):
            assert (await ask(alpha, "one"))["app"] == "alpha"
            assert (await ask(beta, "two"))["app"] == "beta"  # within ANSWER_TIMEOUT_S
            assert only_runner(alpha).state is RunnerState.SUSPENDED
            assert (await ask(alpha, "three"))["app"] == "alpha"
            assert overlaps == []

    asyncio.run(scenario())
