"""The gateway's state, independent of HTTP routing (``http_api``) and of forwarding requests
(``forwarding``).

It owns the supervisor (runners, through a backend), the scheduler (queue + dispatch), the
forwarder (which holds the queue's requests), the job store's lifecycle (opened and taken over
at start, pruned, closed last), the HTTP client to runners, the metrics, and every background
task it starts (the autoscaler, health checks, queue requests, retention, Redis takeover); it
applies the scaler's decisions and builds the ``/runners`` table. It is long because it is
where those parts are wired together and started and stopped in order; each part's logic lives
in its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from minifal.compat.app_environment import environment_summary
from minifal.fleet.backends.base import RunnerBackend, RunnerLaunch
from minifal.fleet.backends.local import LocalRunnerBackend, fork_server_enabled
from minifal.fleet.deployer import Deployer
from minifal.fleet.forwarding import Forwarder
from minifal.fleet.gpu_pool import AppGpus, GpuPool
from minifal.fleet.health_monitor import HealthMonitor
from minifal.fleet.job_store.base import JobStore, StoreBusy, StoreUnavailable
from minifal.fleet.job_store.memory import MemoryJobStore
from minifal.fleet.metrics import GatewayMetrics
from minifal.fleet.request_logs import RequestLogs
from minifal.fleet.request_queue import DEFAULT_MAX_QUEUE
from minifal.fleet.runner import RunnerState
from minifal.fleet.runner_http import RunnerClient
from minifal.fleet.runner_offload import RunnerOffload
from minifal.fleet.runner_suspension import DEFAULT_SLEEP_SECONDS, Suspender
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
from minifal.fleet.webhook_policy import WebhookPolicy
from minifal.host.body_limit import DEFAULT_MAX_BODY_BYTES
from minifal.runner.app_manifest import AppManifest
from minifal.runner_contract import DEFAULT_GRACE_SECONDS, DEFAULT_HOST

if TYPE_CHECKING:
    from minifal.fleet.backends.ray_actors import RunnerResources

logger = logging.getLogger("minifal.fleet")

SCALE_EVERY_SECONDS = 0.25
PRUNE_EVERY_SECONDS = 30.0
"""How often answered requests past the queue's retention are forgotten."""

PHASES = {
    RunnerState.PENDING: Phase.STARTING,
    RunnerState.SETUP: Phase.STARTING,
    RunnerState.FAILURE_DELAY: Phase.STARTING,
    RunnerState.IDLE: Phase.READY,
    RunnerState.RUNNING: Phase.READY,
    RunnerState.DRAINING: Phase.LEAVING,
    RunnerState.TERMINATING: Phase.LEAVING,
    RunnerState.TERMINATED: Phase.LEAVING,
    RunnerState.SUSPENDING: Phase.LEAVING,
    RunnerState.SUSPENDED: Phase.SUSPENDED,
    RunnerState.RESUMING: Phase.STARTING,
}


SHUTDOWN_ANSWER_MARGIN = 1.0
"""Seconds before the grace period's end at which requests still waiting for a runner get 503,
so that their answers go out before the server closes their connections."""


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
    suspend: str = "auto"
    """Suspend idle runners instead of stopping them: ``auto`` (where the driver can), ``on``
    (say so when it cannot), ``off``. How long and in how much memory: ``scaling``."""
    suspend_sleep_s: float = DEFAULT_SLEEP_SECONDS
    """How long a suspended runner that offloaded its weights sleeps on its GPU (fast to
    resume) before the driver's checkpoint takes the rest (``runner_suspension.py``)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    webhook_policy: WebhookPolicy = field(
        default_factory=lambda: WebhookPolicy.for_gateway(DEFAULT_HOST)
    )
    job_store: JobStore = field(default_factory=MemoryJobStore)
    """The queue's journal (``--queue-store``); opened and closed by the gateway."""
    ray_resources: RunnerResources | None = None
    """Runners as Ray actors asking for these (``minifal run --ray``; the driver is connected
    already); None: child processes of the gateway."""
    watch: bool = False
    """Deploy a new revision when the app file changes (``minifal run --watch``)."""
    gpu_pool: GpuPool | None = None
    """The pool this gateway's runners take GPUs from, shared by every app of a gateway that
    serves several (``gateway_group``); None: a pool of ``gpus`` of its own."""
    runner_prefix: str = "runner"
    """Runner ids are ``<runner_prefix>-<n>``; with several apps, ``<app>-runner``."""


def choose_suspender(mode: str, use_gpus: bool) -> Suspender | None:
    """The driver's checkpoint API when suspension is wanted and this host has it; says once
    why not otherwise."""
    if mode == "off":
        return None
    if not use_gpus:
        if mode == "on":
            logger.warning("suspend: the runners use no GPU; idle runners are stopped")
        return None
    from minifal.fleet.backends.cuda_checkpoint import host_cuda_checkpoint

    driver, why = host_cuda_checkpoint()
    if driver is None:
        log = logger.warning if mode == "on" else logger.info
        log("suspend: not available (%s); idle runners are stopped", why)
        return None
    logger.info("suspend: idle runners are suspended to host memory (%s)", why)
    return driver


class Gateway:
    def __init__(
        self,
        manifest: AppManifest,
        options: GatewayOptions,
        backend: RunnerBackend | None = None,
        runner_client: RunnerClient | None = None,
        suspender: Suspender | None = None,
    ) -> None:
        """``backend`` (where runners run) and ``runner_client`` (how requests reach them): None
        for what ``options`` says (Ray actors or child processes, over HTTP). The in-process
        tests pass fakes whose runners are ASGI apps in this process, suspended (``suspender``)
        by a fake driver or never."""
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
            max_body_bytes=options.max_body_bytes,
            requirements=tuple(settings.requirements),
        )
        self.request_logs = RequestLogs()
        """Each request's log lines, from its runner's output."""
        if backend is None and options.ray_resources is not None:
            from minifal.fleet.backends.ray_actors import RayRunnerBackend

            backend = RayRunnerBackend(launch, options.ray_resources, self.request_logs.add)
            suspender = None  # a checkpoint of a process on another node: not here
            if options.suspend == "on":
                logger.warning("suspend: local runners only; idle runners on Ray are stopped")
        elif backend is None:
            app_prefix = options.runner_prefix.removesuffix("runner")  # "" or "<app>-"
            backend = LocalRunnerBackend(
                launch,
                fork_server=fork_server_enabled(),
                on_request_log=self.request_logs.add,
                fork_server_log=f"{app_prefix}fork-server.log",
            )
            suspender = choose_suspender(options.suspend, launch.use_gpus)
        self.scaling = dataclasses.replace(options.scaling, suspend=suspender is not None)
        self.runner_client = runner_client or RunnerClient()
        self.supervisor = Supervisor(
            backend,
            AppGpus(
                options.gpu_pool or GpuPool(options.gpus, settings.gpus_per_runner),
                settings.gpus_per_runner if launch.use_gpus else 0,
            ),
            launch.run_dir,
            settings.startup_timeout,
            self.grace_seconds,
            on_ready=self._runner_ready,
            suspender=suspender,
            offloader=None if suspender is None else RunnerOffload(self.runner_client),
            runner_prefix=options.runner_prefix,
            sleep_seconds=options.suspend_sleep_s,
        )
        self.deployer = Deployer(
            self.supervisor,
            manifest,
            options.app_reference,
            options.data_dir,
            self.scaling.hard_cap,
            self._revision_promoted,
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
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0))
        self.forwarder = Forwarder(
            manifest,
            self.scheduler,
            self.supervisor,
            self.metrics,
            self.runner_client,
            self.client,
            webhook_policy=options.webhook_policy,
            spawn=self.spawn,
            store=options.job_store,
            request_logs=self.request_logs,
        )
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.shutdown_deadline: float | None = None
        """When the grace period that the first stop signal started ends (``time.time()``)."""
        self.shares_gpus = False
        """A GPU pool shared with other apps (``shared_gpu_pool.py``) starts and resumes this
        gateway's runners, on the GPUs its arbiter grants; the scaler still says how many."""
        self.demand = asyncio.Event()
        """Set when a request waits with no runner to take it: the scaler looks at once."""
        self.demand_listeners: list[Callable[[], None]] = []
        """Told the same (the shared GPU pool, which starts and resumes runners then)."""
        self.scheduler.on_first_waiting = self._request_waits

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._open_job_store()
        self.scale_once()
        self._loops.append(asyncio.create_task(self._scale_forever(), name="autoscaler"))
        if self.options.watch:
            self._loops.append(asyncio.create_task(self.deployer.watch(), name="watch"))
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

    def begin_shutdown(self) -> None:
        """The first stop signal (called from the signal handler). The listener closes; what
        runs on a runner finishes (until the grace period's end). Queue requests not started
        stay queued in a durable job store, for the next gateway; sync calls (and queue
        requests of a memory store) not started by the grace period's end, less
        ``SHUTDOWN_ANSWER_MARGIN``, get 503."""
        if self._loop is None or self.shutdown_deadline is not None:
            return
        self.shutdown_deadline = time.time() + self.grace_seconds
        close_in = max(0.0, self.grace_seconds - SHUTDOWN_ANSWER_MARGIN)
        if self.forwarder.store.durable:
            self._loop.call_soon_threadsafe(self.scheduler.park, lambda job: job.queued)
            logger.info("stopping: queue requests not started stay queued in the job store")
        self._loop.call_soon_threadsafe(self._loop.call_later, close_in, self.scheduler.close)
        logger.info("stopping: requests not started within %.0f s will get 503", close_in)

    async def stop(self) -> None:
        """Let accepted queue requests finish (until the grace period's end), then stop runners."""
        deadline = self.shutdown_deadline or time.time() + self.grace_seconds
        pending = [task for task in self._job_tasks if not task.done()]
        if pending:
            logger.info("draining %d queued request(s)", len(pending))
            close_in = max(0.0, deadline - time.time() - SHUTDOWN_ANSWER_MARGIN)
            closing = asyncio.get_running_loop().call_later(close_in, self.scheduler.close)
            await asyncio.wait(pending, timeout=max(0.01, deadline - time.time()))
            closing.cancel()
        for loop in self._loops:
            loop.cancel()
        await self.supervisor.stop()
        for task in list(self._job_tasks):
            task.cancel()
        await asyncio.gather(*self._loops, *self._job_tasks, return_exceptions=True)
        await self.forwarder.store.close()
        await self.client.aclose()
        await self.runner_client.aclose()

    def spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        """Start a request's background task, owned by the gateway (drained by ``stop()``)."""
        task = asyncio.create_task(coroutine, name=name)
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)
        return task

    async def _open_job_store(self) -> None:
        """Open the queue's store and take up what it holds; a SQLite store another live
        gateway holds is not shared: this one keeps its queue in memory (and says so)."""
        store = self.forwarder.store
        try:
            await store.open()
        except StoreBusy as exc:
            logger.warning("queue: %s; this gateway's queue is in memory only", exc)
            self.forwarder.store = store = MemoryJobStore()
        self.forwarder.resume(await store.take_over())
        self._loops.append(asyncio.create_task(self._prune_forever(), name="queue-retention"))
        if store.shared:
            self._loops.append(
                asyncio.create_task(self._take_over_forever(), name="queue-takeover")
            )

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_SECONDS)
            try:
                forgotten = await self.forwarder.store.prune(time.time())
            except StoreUnavailable as exc:
                logger.error("queue retention: %s", exc)
                continue
            if forgotten:
                logger.info("queue retention: forgot %d answered request(s)", forgotten)

    async def _take_over_forever(self) -> None:
        """A shared store: requests of gateways whose lease lapsed become this one's."""
        store = self.forwarder.store
        every = getattr(store, "lease_seconds", 10.0) / 3
        while True:
            await asyncio.sleep(every)
            if self.shutdown_deadline is not None:
                return  # a stopping gateway takes nothing new on
            try:
                self.forwarder.resume(await store.take_over())
            except StoreUnavailable as exc:
                logger.error("queue takeover: %s", exc)

    def _runner_ready(self) -> None:
        self.scheduler.pump()

    def _revision_promoted(self, manifest: AppManifest) -> None:
        self.manifest = manifest
        self.forwarder.manifest = manifest

    # -- scaling -----------------------------------------------------------------------------------

    def snapshot(self) -> FleetSnapshot:
        now = time.time()
        views = tuple(
            RunnerView(
                runner.runner_id,
                Phase.STARTING if runner.replace_reason is not None else PHASES[runner.state],
                runner.in_flight,
                runner.idle_since if runner.in_flight == 0 else None,
                runner.suspensions.suspended_since,
                runner.suspensions.host_memory_bytes or 0,
            )
            for runner in self.supervisor.runners
            if not runner.retiring
        )
        waits = tuple(now - job.created for job in self.scheduler.queue)
        return FleetSnapshot(now, views, waits)

    def scale_once(self) -> None:
        """Apply the scaler's decision: start runners, retire idle ones past keep_alive."""
        decision = decide(self.snapshot(), self.scaling)
        if self.deployer.rolling_out:  # the rollout starts and stops runners meanwhile
            self.deployer.step(decision.desired)
            return
        if self.shares_gpus:  # the shared pool starts and resumes them where its arbiter says
            decision = dataclasses.replace(decision, start=0, resume=())
        for runner_id in decision.resume:
            runner = self.supervisor.find(runner_id)
            if runner is not None and self.supervisor.resume(runner):
                logger.info("[%s] resuming: %s", runner_id, decision.reason)
        for runner_id in decision.suspend:
            runner = self.supervisor.find(runner_id)
            if runner is not None and self.supervisor.suspend(runner):
                logger.info("[%s] suspending: %s", runner_id, decision.reason)
        for _ in range(decision.start):
            runner = self.supervisor.add_runner(self.deployer.runner_revision())
            logger.info(
                "[%s] starting: %s (want %d)", runner.runner_id, decision.reason, decision.desired
            )
        for runner_id in decision.stop:
            runner = self.supervisor.find(runner_id)
            if runner is not None:
                self.supervisor.retire(runner, decision.reason)

    def _request_waits(self) -> None:
        self.demand.set()
        for listener in self.demand_listeners:
            listener()

    async def _scale_forever(self) -> None:
        """Every ``SCALE_EVERY_SECONDS``, or at once when a request waits with no runner."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.demand.wait(), SCALE_EVERY_SECONDS)
            self.demand.clear()
            self.scale_once()

    # -- observability ---------------------------------------------------------------------------

    def live_runner_pids(self) -> set[int]:
        """This gateway's runner processes that have not exited (on any node)."""
        runners = self.supervisor.runners
        return {runner.pid for runner in runners if runner.pid is not None and not runner.exited}

    def runners_table(self) -> dict[str, Any]:
        now = time.time()
        settings = self.manifest.settings
        snapshot = self.snapshot()
        live = sum(1 for view in snapshot.runners if view.phase is not Phase.LEAVING)
        views = {view.runner_id: view for view in snapshot.runners}
        rows = []
        for runner in self.supervisor.runners:
            view = views.get(runner.runner_id)
            expiry = expires_in(view, live, now, self.scaling) if view else None
            rows.append(
                {
                    "alias": self.manifest.app_name,
                    "machine_type": settings.machine_types[0],
                    "runner_id": runner.runner_id,
                    "in_flight_requests": runner.in_flight,
                    "expires_in": None if expiry is None else round(expiry, 1),
                    "uptime": round(now - runner.started_at, 3) if runner.started_at else 0.0,
                    "revision": runner.revision_id,
                    "state": runner.state.value,
                    "startup_seconds": runner.startup_seconds,
                    "gpus": ",".join(runner.gpus),
                    "pid": runner.pid,
                    "port": runner.port,
                    "node": runner.node,
                    "last_exit_reason": runner.last_exit_reason,
                    "suspensions": dataclasses.asdict(runner.suspensions),
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
            "revisions": self.deployer.to_json(),
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
