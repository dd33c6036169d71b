"""One machine's GPUs shared by several apps' gateways: the pool takes a snapshot of every app
that joined it, asks the arbiter (``gpu_arbiter.py``, pure) for a plan and carries it out
through each app's supervisor: suspend, stop or drain the runners it takes back, resume or
start runners on the GPUs it grants.

Each app's scaler still says how many runners its app wants (``scaler.decide`` on the
gateway's snapshot); its gateway applies the scale-downs itself (keep_alive, suspended
runners' expiry) and leaves the starts and resumes to the pool (``Gateway.shares_gpus``).
The host-memory budget of suspended runners is the pool's, for every app together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from minifal.fleet.gateway import Gateway
from minifal.fleet.gpu_arbiter import (
    Action,
    ArbiterSettings,
    Hold,
    PooledApp,
    PooledRunner,
    PoolPlan,
    PoolSnapshot,
    arbitrate,
)
from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.scaler import decide

logger = logging.getLogger("minifal.fleet")

ARBITRATE_EVERY_SECONDS = 0.05
"""How often the pool looks besides the events that make it look at once (a request waiting
with no runner, a runner that let go of its GPUs): for expiries and waits that age."""

HOLDS = {
    RunnerState.PENDING: Hold.STARTING,
    RunnerState.SETUP: Hold.STARTING,
    RunnerState.FAILURE_DELAY: Hold.BACKING_OFF,  # it restarts on the same GPUs
    RunnerState.IDLE: Hold.READY,
    RunnerState.RUNNING: Hold.READY,
    RunnerState.DRAINING: Hold.STOPPING,
    RunnerState.TERMINATING: Hold.STOPPING,
    RunnerState.SUSPENDING: Hold.SUSPENDING,
    RunnerState.SUSPENDED: Hold.SUSPENDED,
    RunnerState.RESUMING: Hold.RESUMING,
}


def hold_of(runner: Runner) -> Hold | None:
    """What a runner does with its GPUs; None once it holds none and never will again."""
    if runner.state is RunnerState.TERMINATED:
        return None
    if (
        runner.retiring
        and runner.suspensions.suspended_since is not None
        and runner.state is not RunnerState.RESUMING
    ):
        return None  # stopped while suspended: no GPU memory since its suspend, never resumed
    if runner.retiring:
        return Hold.STOPPING
    if runner.withheld and runner.state in (RunnerState.IDLE, RunnerState.RUNNING):
        return Hold.STARTING  # being replaced, or its connection was lost: not to be taken
    return HOLDS[runner.state]


def pooled_runner(runner: Runner, hold: Hold, keep_alive: float) -> PooledRunner:
    idle = hold is Hold.READY and runner.in_flight == 0
    return PooledRunner(
        runner.runner_id,
        tuple(runner.gpus),
        hold,
        runner.in_flight,
        idle_since=runner.idle_since if idle else None,
        keep_alive_until=runner.idle_since + keep_alive if idle else None,
        suspended_since=runner.suspensions.suspended_since,
        host_memory=runner.suspensions.host_memory_bytes or 0,
    )


class SharedGpuPool:
    def __init__(
        self,
        gpus: list[str],
        host_memory_budget: int | None = None,
        settings: ArbiterSettings | None = None,
        every: float = ARBITRATE_EVERY_SECONDS,
    ) -> None:
        """``gpus``: the machine's GPUs the apps share; ``host_memory_budget``: bytes all
        suspended runners may hold together (None: no limit)."""
        self.gpus = list(gpus)
        self.host_memory_budget = host_memory_budget
        self.settings = settings or ArbiterSettings()
        self.every = every
        self.apps: dict[str, Gateway] = {}
        self._task: asyncio.Task[None] | None = None
        self._look = asyncio.Event()  # a request waits with no runner, or GPUs were freed

    def join(self, app: str, gateway: Gateway) -> None:
        """``gateway`` serves ``app`` on this pool's GPUs from now on: the pool starts and
        resumes its runners."""
        self.apps[app] = gateway
        gateway.shares_gpus = True
        gateway.demand_listeners.append(self._look.set)
        gateway.supervisor.gpus_freed_listeners.append(self._look.set)

    async def start(self) -> None:
        self.arbitrate_once()
        self._task = asyncio.create_task(self._arbitrate_forever(), name="gpu-pool")

    async def stop(self) -> None:
        """Stop arbitrating (before the gateways stop their runners)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _arbitrate_forever(self) -> None:
        """At once when an app's request waits with no runner or a runner let go of its GPUs
        (suspended, or ended), and every ``every`` seconds besides."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look.wait(), self.every)
            self._look.clear()
            self.arbitrate_once()

    def arbitrate_once(self) -> PoolPlan:
        plan = arbitrate(self.snapshot(), self.settings)
        self.apply(plan)
        return plan

    # -- what the arbiter sees -----------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        now = time.time()
        apps = tuple(self._view(app, gateway, now) for app, gateway in self.apps.items())
        return PoolSnapshot(now, tuple(self.gpus), apps, self.host_memory_budget)

    def _view(self, app: str, gateway: Gateway, now: float) -> PooledApp:
        scaling = gateway.scaling
        runners = tuple(
            pooled_runner(runner, hold, scaling.keep_alive)
            for runner in gateway.supervisor.runners
            if (hold := hold_of(runner)) is not None
        )
        waits = [now - job.created for job in gateway.scheduler.queue]
        return PooledApp(
            app,
            runners,
            wants=self._wants(gateway),
            waiting=len(waits),
            oldest_wait=max(waits, default=0.0),
            gpus_per_runner=gateway.manifest.settings.gpus_per_runner if self.gpus else 0,
            min_concurrency=scaling.min_concurrency,
            can_suspend=scaling.suspend and gateway.supervisor.suspension is not None,
        )

    @staticmethod
    def _wants(gateway: Gateway) -> int:
        """Runners its scaler would start or resume now; none while a rollout or a shutdown
        has the gateway's runners in hand."""
        if gateway.deployer.rolling_out or gateway.shutdown_deadline is not None:
            return 0
        if gateway.supervisor.stopping:
            return 0
        decision = decide(gateway.snapshot(), gateway.scaling)
        return decision.start + len(decision.resume)

    # -- carrying a plan out -------------------------------------------------------------------

    def apply(self, plan: PoolPlan) -> None:
        for reclaim in plan.reclaims:
            supervisor = self.apps[reclaim.app].supervisor
            runner = supervisor.find(reclaim.runner_id)
            if runner is None:
                continue
            why = reclaim.reason
            if reclaim.for_app is not None:
                why = f"GPU for {reclaim.for_app}: {why}"
            if reclaim.action is Action.SUSPEND:
                if supervisor.suspend(runner):
                    logger.info("[%s/%s] suspending: %s", reclaim.app, runner.runner_id, why)
            elif reclaim.action is Action.STOP:
                supervisor.retire(runner, why)
            else:
                supervisor.drain(runner, why)
        for grant in plan.grants:
            gateway = self.apps[grant.app]
            if grant.resume is not None:
                runner = gateway.supervisor.find(grant.resume)
                if runner is not None and gateway.supervisor.resume(runner):
                    logger.info(
                        "[%s/%s] resuming on GPU %s", grant.app, grant.resume, ",".join(grant.gpus)
                    )
                continue
            revision = gateway.deployer.runner_revision()
            runner = gateway.supervisor.add_runner(revision, gpus=list(grant.gpus))
            logger.info(
                "[%s/%s] starting on GPU %s", grant.app, runner.runner_id, ",".join(grant.gpus)
            )
