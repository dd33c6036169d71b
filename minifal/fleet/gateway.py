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

from minifal.app_manifest import AppManifest
from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.jobs import Job
from minifal.fleet.metrics import GatewayMetrics
from minifal.fleet.runner_process import RunnerLaunch, RunnerProcess
from minifal.fleet.scheduler import Scheduler, StartTimeout, Withdrawn
from minifal.fleet.supervisor import Supervisor
from minifal.fleet.webhooks import deliver_webhook

logger = logging.getLogger("minifal.fleet")

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
COMPLETED_JOBS_KEPT = 10_000
DEFAULT_GRACE_SECONDS = 60.0


def json_body(data: Any) -> bytes:
    return json.dumps(data).encode()


@dataclass(frozen=True)
class GatewayOptions:
    app_reference: str
    data_dir: Path
    run_id: str
    public_url: str
    workers: int
    gpus: list[str]
    auth_key: str | None = None
    max_queue: int | None = None
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
            lambda: self.supervisor.runners, lambda: len(self.scheduler.queue)
        )
        self.jobs: dict[str, Job] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0))
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        for _ in range(self.options.workers):
            self.supervisor.add_runner()

    async def stop(self) -> None:
        """Let accepted queue requests finish (bounded by the grace period), then stop runners."""
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            logger.info("draining %d queued request(s)", len(pending))
            await asyncio.wait(pending, timeout=self.grace_seconds)
        await self.supervisor.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    def spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        """Start a background task owned by the gateway (cancelled by ``stop()``)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _runner_ready(self) -> None:
        self.scheduler.pump()

    # -- requests --------------------------------------------------------------------------------

    @property
    def request_timeout(self) -> float | None:
        return self.manifest.settings.request_timeout

    def forward_headers(self, job: Job, incoming: dict[str, str]) -> dict[str, str]:
        skipped = HOP_BY_HOP | {"host", "content-length", "authorization"}
        headers = {k: v for k, v in incoming.items() if k.lower() not in skipped}
        headers["x-fal-request-id"] = job.id
        headers["x-fal-endpoint"] = job.path
        return headers

    def submit_queued(self, job: Job) -> None:
        """Accept a queue request (raises ``QueueFull``); it runs in a task the gateway owns."""
        self.scheduler.submit(job)
        self.jobs[job.id] = job
        self._forget_old_jobs()
        self.spawn(self._run_queued(job), name=f"job-{job.id}")

    async def _run_queued(self, job: Job) -> None:
        try:
            runner = await self.scheduler.wait_for_runner(job)
        except StartTimeout:
            self.complete_start_timeout(job)
        except Withdrawn:
            pass
        else:
            try:
                await self._execute(job, runner)
            finally:
                self.scheduler.release(runner)
        if job.webhook_url:
            await deliver_webhook(self.client, job)

    def complete_start_timeout(self, job: Job) -> None:
        detail = {"detail": "Request timed out before a runner could start it"}
        headers = {"content-type": "application/json", "x-fal-request-timeout-type": "user"}
        job.complete(504, json_body(detail), headers)
        self.metrics.completed(504, time.time() - job.created)

    async def _execute(self, job: Job, runner: RunnerProcess) -> None:
        job.start(runner.runner_id)
        url = f"{runner.url}{job.path}"
        try:
            response = await asyncio.wait_for(
                self.client.post(url, content=job.body, headers=job.headers),
                timeout=self.request_timeout,
            )
            headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            headers.pop("content-length", None)
            job.complete(response.status_code, response.content, headers)
        except TimeoutError:
            detail = f"Request exceeded request_timeout={self.request_timeout}s"
            job.complete(504, json_body({"detail": detail}))
        except httpx.HTTPError as exc:
            logger.error("[%s] request %s lost: %s", runner.runner_id, job.id, exc)
            job.complete(503, json_body({"detail": "The runner serving this request failed"}))
        self.metrics.completed(job.response_status or 0, time.time() - job.created)

    async def cancel(self, job: Job) -> tuple[int, dict[str, Any]]:
        """fal's cancel: a queued request is dropped; a running one is asked to stop."""
        if job.status == "COMPLETED":
            return 400, {"status": "ALREADY_COMPLETED"}
        job.cancelled = True
        if self.scheduler.withdraw(job):
            job.complete(499, json_body({"detail": "Request cancelled by the client."}))
            self.metrics.completed(499, time.time() - job.created)
            return 202, {"status": "CANCELLATION_REQUESTED"}
        runner = next((r for r in self.supervisor.runners if r.runner_id == job.runner_id), None)
        if runner is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.client.post(
                    f"{runner.url}{job.path.rstrip('/')}/cancel",
                    headers={"x-fal-request-id": job.id},
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
        rows = []
        for runner in self.supervisor.runners:
            rows.append(
                {
                    "alias": self.manifest.app_name,
                    "machine_type": settings.machine_types[0],
                    "runner_id": runner.runner_id,
                    "in_flight_requests": runner.in_flight,
                    "expires_in": None,
                    "uptime": round(now - runner.started_at, 3) if runner.started_at else 0.0,
                    "revision": self.options.run_id,
                    "state": runner.state.value,
                    "startup_seconds": runner.startup_seconds,
                    "gpus": ",".join(runner.gpus),
                    "pid": runner.pid,
                    "port": runner.port,
                    "last_exit_reason": runner.last_exit_reason,
                }
            )
        return {"app": self.manifest.app_name, "run_id": self.options.run_id, "runners": rows}
