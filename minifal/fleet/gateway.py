"""The gateway's state and behaviour, independent of HTTP routing (see ``http_api``).

It owns the supervisor (runner processes), the scheduler (queue + dispatch), the table of
queued requests, the HTTP client to runners, and every background task it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from minifal.app_environment import environment_summary
from minifal.app_manifest import AppManifest
from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.health_monitor import HealthMonitor
from minifal.fleet.jobs import Job
from minifal.fleet.metrics import GatewayMetrics
from minifal.fleet.request_queue import DEFAULT_MAX_QUEUE
from minifal.fleet.runner_process import RunnerLaunch, RunnerProcess, RunnerState
from minifal.fleet.scaler import (
    FleetSnapshot,
    Phase,
    RunnerView,
    ScalingSettings,
    decide,
    expires_in,
)
from minifal.fleet.scheduler import Scheduler, StartTimeout, Withdrawn
from minifal.fleet.supervisor import Supervisor
from minifal.fleet.webhooks import deliver_webhook
from minifal.runner_contract import DEFAULT_GRACE_SECONDS, ENDPOINT_HEADER, REQUEST_ID_HEADER

logger = logging.getLogger("minifal.fleet")

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
COMPLETED_JOBS_KEPT = 10_000
DEFAULT_START_TIMEOUT_SECONDS = 1800.0
"""A request without ``X-Fal-Request-Timeout`` waits at most this long for a runner."""
MAX_ATTEMPTS = 10  # fal retries queue requests up to 10 times on 503, 504 and lost connections
RETRYABLE_STATUSES = {503, 504}
SCALE_EVERY_SECONDS = 0.25
LOST_RUNNER_GRACE_SECONDS = 2.0

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


def json_body(data: Any) -> bytes:
    return json.dumps(data).encode()


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
            launch,
            GpuPool(options.gpus if launch.use_gpus else [], settings.gpus_per_runner),
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
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0))
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

    # -- requests --------------------------------------------------------------------------------

    @property
    def request_timeout(self) -> float | None:
        return self.manifest.settings.request_timeout

    def forward_headers(self, job: Job, incoming: dict[str, str]) -> dict[str, str]:
        skipped = HOP_BY_HOP | {"host", "content-length", "authorization"}
        headers = {k: v for k, v in incoming.items() if k.lower() not in skipped}
        headers[REQUEST_ID_HEADER] = job.id
        headers[ENDPOINT_HEADER] = job.path
        return headers

    def submit_queued(self, job: Job) -> None:
        """Accept a queue request (raises ``QueueFull``); it runs in a task the gateway owns."""
        self.scheduler.submit(job)
        self.jobs[job.id] = job
        self._forget_old_jobs()
        self.spawn(self._run_queued(job), name=f"job-{job.id}")

    async def _run_queued(self, job: Job) -> None:
        """Run a queue request until it has an answer; a lost runner means another attempt."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                runner = await self.scheduler.wait_for_runner(job)
            except StartTimeout:
                self.complete_start_timeout(job)
                break
            except Withdrawn:
                break
            try:
                retry = await self._execute(job, runner, last_attempt=attempt == MAX_ATTEMPTS)
            finally:
                self.scheduler.release(runner)
            if not retry:
                break
            logger.warning(
                "request %s: attempt %d failed on %s, retrying", job.id, attempt, runner.runner_id
            )
            job.requeue()
            self.scheduler.requeue(job)
        if job.webhook_url and job.status == "COMPLETED":
            await deliver_webhook(self.client, job)

    def complete_start_timeout(self, job: Job) -> None:
        detail = {"detail": "Request timed out before a runner could start it"}
        headers = {"content-type": "application/json", "x-fal-request-timeout-type": "user"}
        job.complete(504, json_body(detail), headers)
        self.metrics.completed(504, time.time() - job.created)

    async def _execute(self, job: Job, runner: RunnerProcess, last_attempt: bool) -> bool:
        """One attempt on ``runner``; True when it failed in a way worth another runner's try
        (503, 504, lost connection) and attempts are left. Never retried: any 4xx."""
        job.start(runner.runner_id)
        url = f"{runner.url}{job.path}"
        try:
            response = await asyncio.wait_for(
                self.client.post(url, content=job.body, headers=job.headers),
                timeout=self.request_timeout,
            )
        except TimeoutError:
            self.supervisor.replace(runner, f"request over request_timeout={self.request_timeout}s")
            if not last_attempt:
                return True
            detail = f"Request exceeded request_timeout={self.request_timeout}s"
            job.complete(504, json_body({"detail": detail}))
        except httpx.HTTPError as exc:
            logger.error("[%s] request %s lost: %s", runner.runner_id, job.id, exc)
            self.runner_lost(runner, exc)
            if not last_attempt:
                return True
            job.complete(503, json_body({"detail": "The runner serving this request failed"}))
        else:
            if response.status_code in RETRYABLE_STATUSES and not last_attempt:
                return True
            headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            headers.pop("content-length", None)
            job.complete(response.status_code, response.content, headers)
            self.metrics.answered(job.path, response.status_code, headers, job.inference_time)
        self.metrics.completed(job.response_status or 0, time.time() - job.created)
        return False

    def runner_lost(self, runner: RunnerProcess, exc: Exception) -> None:
        """The connection to a runner broke: send it nothing more. A process that died is a
        crash for its lifecycle (back-off, restart); one still alive a moment later is hung
        and gets replaced. Waiting that moment makes a crash look the same however the
        gateway learnt of it first."""
        if not runner.suspended:
            runner.suspended = True
            reason = f"lost connection ({type(exc).__name__})"
            self._loops = [loop for loop in self._loops if not loop.done()]
            self._loops.append(asyncio.create_task(self._replace_if_alive(runner, reason)))

    async def _replace_if_alive(self, runner: RunnerProcess, reason: str) -> None:
        await asyncio.sleep(LOST_RUNNER_GRACE_SECONDS)
        if runner.suspended and not runner.exited:
            self.supervisor.replace(runner, reason)

    async def cancel(self, job: Job) -> tuple[int, dict[str, Any]]:
        """fal's cancel: a queued request is dropped; a running one is asked to stop."""
        if job.status == "COMPLETED":
            return 400, {"status": "ALREADY_COMPLETED"}
        if self.scheduler.withdraw(job):
            job.complete(499, json_body({"detail": "Request cancelled by the client."}))
            self.metrics.completed(499, time.time() - job.created)
            return 202, {"status": "CANCELLATION_REQUESTED"}
        runner = self.supervisor.find(job.runner_id)
        if runner is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.client.post(
                    f"{runner.url}{job.path.rstrip('/')}/cancel",
                    headers={REQUEST_ID_HEADER: job.id},
                    timeout=5.0,
                )
        return 202, {"status": "CANCELLATION_REQUESTED"}

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
