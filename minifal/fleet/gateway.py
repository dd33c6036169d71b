"""The gateway's state, independent of HTTP routing (``http_api``) and of forwarding requests
(``forwarding``).

It owns the supervisor (runners, through a backend), the scheduler (queue + dispatch), the
forwarder, the table of queue requests, the HTTP client to runners, the metrics, and every
background task it starts (the autoscaler, health checks, queue requests); it applies the
scaler's decisions and builds the ``/runners`` table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from minifal.app_environment import environment_summary
from minifal.app_manifest import AppManifest
from minifal.fleet.forwarding import Forwarder
from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.health_monitor import HealthMonitor
from minifal.fleet.jobs import Job
from minifal.fleet.local_runners import LocalRunnerBackend
from minifal.fleet.metrics import GatewayMetrics
from minifal.fleet.request_queue import DEFAULT_MAX_QUEUE
from minifal.fleet.runner import RunnerState
from minifal.fleet.runner_backend import RunnerLaunch
from minifal.fleet.runner_http import RunnerClient
from minifal.fleet.scaler import (
    FleetSnapshot,
    Phase,
    RunnerView,
    ScalingSettings,
    decide,
    expires_in,
)
from minifal.fleet.scheduler import Scheduler
from minifal.fleet.supervisor import Supervisor
from minifal.runner_contract import DEFAULT_GRACE_SECONDS

logger = logging.getLogger("minifal.fleet")

COMPLETED_JOBS_KEPT = 10_000
SCALE_EVERY_SECONDS = 0.25

PHASES = {
    RunnerState.PENDING: Phase.STARTING,
    RunnerState.SETUP: Phase.STARTING,
    RunnerState.FAILURE_DELAY: Phase.STARTING,
    RunnerState.IDLE: Phase.READY,
    RunnerState.RUNNING: Phase.READY,
    RunnerState.DRAINING: Phase.LEAVING,
    RunnerState.TERMINATING: Phase.LEAVING,
    RunnerState.TERMINATED: Phase.LEAVING,
}


@dataclass(frozen=True)
class GatewayOptions:
    app_reference: str
    data_dir: Path
    run_id: str
    public_url: str
    scaling: ScalingSettings
    gpus: list[str]
    auth_key: str | None = None
    max_queue: int | None = DEFAULT_MAX_QUEUE
    echo_output: bool = True


class Gateway:
    def __init__(self, manifest: AppManifest, options: GatewayOptions) -> None:
        self.manifest = manifest
        self.options = options
        settings = manifest.settings
        self.started_at = time.time()
        self.grace_seconds = settings.termination_grace_period_seconds or DEFAULT_GRACE_SECONDS
        launch = RunnerLaunch(
            app_reference=options.app_reference,
            data_dir=options.data_dir,
            run_id=options.run_id,
            run_dir=options.data_dir / "runs" / options.run_id,
            public_url=options.public_url,
            use_gpus=bool(options.gpus) and settings.gpus_per_runner > 0,
            echo_output=options.echo_output,
        )
        self.supervisor = Supervisor(
            LocalRunnerBackend(launch),
            GpuPool(options.gpus if launch.use_gpus else [], settings.gpus_per_runner),
            launch.run_dir,
            settings.startup_timeout,
            self.grace_seconds,
            on_ready=self._runner_ready,
        )
        self.scheduler = Scheduler(
            lambda: self.supervisor.runners, settings.max_multiplexing, options.max_queue
        )
        self.metrics = GatewayMetrics(
            lambda: self.supervisor.runners,
            lambda: len(self.scheduler.queue),
            manifest.billing_components,
        )
        self.environment = environment_summary(settings.kind, settings.image)
        """Where the runners run: here, whatever container image the App declares."""
        self.jobs: dict[str, Job] = {}
        """Queue requests by id, answered ones included (the last ``COMPLETED_JOBS_KEPT``)."""
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0))
        self.runner_client = RunnerClient()
        self.forwarder = Forwarder(
            manifest, self.scheduler, self.supervisor, self.metrics, self.runner_client, self.client
        )
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.scale_once()
        self._loops.append(asyncio.create_task(self._scale_forever(), name="autoscaler"))
        health = self.manifest.health_endpoint
        if health is not None and health.health_check is not None:
            monitor = HealthMonitor(
                health.path,
                health.health_check,
                lambda: self.supervisor.live_runners,
                self.supervisor.replace,
                self.client,
            )
            self._loops.append(asyncio.create_task(monitor.run(), name="health-checks"))

    async def stop(self) -> None:
        """Let accepted queue requests finish (bounded by the grace period), then stop runners."""
        pending = [task for task in self._job_tasks if not task.done()]
        if pending:
            logger.info("draining %d queued request(s)", len(pending))
            await asyncio.wait(pending, timeout=self.grace_seconds)
        for loop in self._loops:
            loop.cancel()
        await self.supervisor.stop()
        for task in list(self._job_tasks):
            task.cancel()
        await asyncio.gather(*self._loops, *self._job_tasks, return_exceptions=True)
        await self.client.aclose()
        await self.runner_client.aclose()

    def spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        """Start a request's background task, owned by the gateway (drained by ``stop()``)."""
        task = asyncio.create_task(coroutine, name=name)
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)
        return task

    def _runner_ready(self) -> None:
        self.scheduler.pump()

    # -- scaling -----------------------------------------------------------------------------------

    def snapshot(self) -> FleetSnapshot:
        now = time.time()
        views = tuple(
            RunnerView(
                runner.runner_id,
                Phase.STARTING if runner.replace_reason is not None else PHASES[runner.state],
                runner.in_flight,
                runner.idle_since if runner.in_flight == 0 else None,
            )
            for runner in self.supervisor.runners
            if not runner.retiring
        )
        waits = tuple(now - job.created for job in self.scheduler.queue)
        return FleetSnapshot(now, views, waits)

    def scale_once(self) -> None:
        """Apply the scaler's decision: start runners, retire idle ones past keep_alive."""
        decision = decide(self.snapshot(), self.options.scaling)
        for _ in range(decision.start):
            runner = self.supervisor.add_runner()
            logger.info(
                "[%s] starting: %s (want %d)", runner.runner_id, decision.reason, decision.desired
            )
        for runner_id in decision.stop:
            runner = self.supervisor.find(runner_id)
            if runner is not None:
                self.supervisor.retire(runner, decision.reason)

    async def _scale_forever(self) -> None:
        while True:
            await asyncio.sleep(SCALE_EVERY_SECONDS)
            self.scale_once()

    # -- queue requests ----------------------------------------------------------------------------

    def submit_queued(self, job: Job) -> None:
        """Accept a queue request (raises ``QueueFull``); it runs in a task the gateway owns."""
        self.forwarder.enqueue(job)
        self.jobs[job.id] = job
        self._forget_old_jobs()
        self.spawn(self.forwarder.run_queued(job), name=f"job-{job.id}")

    def queue_position(self, job: Job) -> int | None:
        return self.scheduler.position(job)

    def _forget_old_jobs(self) -> None:
        if len(self.jobs) <= COMPLETED_JOBS_KEPT:
            return
        for job_id in [j.id for j in self.jobs.values() if j.status == "COMPLETED"][:1000]:
            del self.jobs[job_id]

    # -- observability ---------------------------------------------------------------------------

    def runners_table(self) -> dict[str, Any]:
        now = time.time()
        settings = self.manifest.settings
        snapshot = self.snapshot()
        live = sum(1 for view in snapshot.runners if view.phase is not Phase.LEAVING)
        views = {view.runner_id: view for view in snapshot.runners}
        rows = []
        for runner in self.supervisor.runners:
            view = views.get(runner.runner_id)
            expiry = expires_in(view, live, now, self.options.scaling) if view else None
            rows.append(
                {
                    "alias": self.manifest.app_name,
                    "machine_type": settings.machine_types[0],
                    "runner_id": runner.runner_id,
                    "in_flight_requests": runner.in_flight,
                    "expires_in": None if expiry is None else round(expiry, 1),
                    "uptime": round(now - runner.started_at, 3) if runner.started_at else 0.0,
                    "revision": self.options.run_id,
                    "state": runner.state.value,
                    "startup_seconds": runner.startup_seconds,
                    "gpus": ",".join(runner.gpus),
                    "pid": runner.pid,
                    "port": runner.port,
                    "node": runner.node,
                    "last_exit_reason": runner.last_exit_reason,
                    "state_history": [
                        {"at": round(at, 3), "state": state.value}
                        for at, state in runner.state_history
                    ],
                }
            )
        return {
            "app": self.manifest.app_name,
            "run_id": self.options.run_id,
            "environment": self.environment,
            "runners": rows,
        }

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "app": self.manifest.app_name,
            "runners_ready": self.supervisor.ready_count,
            "runners": len(self.supervisor.runners),
            "queue_size": len(self.scheduler.queue),
        }
