"""``minifal run``: inspect the app, start the gateway and its runners, serve until stopped.

Several apps (``minifal run A B``): one gateway per app (``Gateway``), behind one listener
(``gateway_group``, ``http_api.build_group_app``), their runners on one GPU pool whose arbiter
grants GPUs (``shared_gpu_pool``; the suspended runners of every app share one host-memory
budget, ``--suspend-memory-gib``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from minifal.fleet.auth import exposure_warning
from minifal.fleet.backends.cuda_checkpoint import host_cuda_checkpoint
from minifal.fleet.gateway import Gateway, GatewayOptions
from minifal.fleet.gateway_group import APP_NAME, GatewayGroup, runner_prefix
from minifal.fleet.gpu_pool import GpuPool, detect_gpus
from minifal.fleet.http_api import build_gateway_app, build_group_app
from minifal.fleet.job_store.base import StoreUnavailable
from minifal.fleet.job_store.choice import check_reachable, job_store_for
from minifal.fleet.job_store.rules import (
    DEFAULT_RETENTION_BYTES,
    DEFAULT_RETENTION_SECONDS,
    Retention,
)
from minifal.fleet.request_queue import DEFAULT_MAX_QUEUE
from minifal.fleet.runner_suspension import DEFAULT_SLEEP_SECONDS
from minifal.fleet.scaler import DEFAULT_SUSPENDED_KEEP_ALIVE, ScalingSettings
from minifal.fleet.shared_gpu_pool import SharedGpuPool
from minifal.fleet.webhook_policy import WebhookPolicy
from minifal.host import envs
from minifal.host.body_limit import configured_max_body_bytes, parse_size
from minifal.host.data_dir import activate_data_dir, resolve_data_dir
from minifal.host.log_format import configure_logging
from minifal.host.quiet_exit_server import QuietExitServer
from minifal.runner.app_manifest import AppManifest, ManifestError, inspect_app
from minifal.runner_contract import DEFAULT_HOST, DEFAULT_PORT, export_to_process

if TYPE_CHECKING:
    from minifal.fleet.backends.ray_actors import RayCluster

logger = logging.getLogger("minifal.fleet")


@dataclass(frozen=True)
class FleetArguments:
    app: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int | None = None
    gpus: str | None = None
    data_dir: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    auth_key: str | None = None
    max_queue: int | None = DEFAULT_MAX_QUEUE
    suspend: str = "auto"
    suspended_keep_alive: float = DEFAULT_SUSPENDED_KEEP_ALIVE
    suspend_sleep_s: float = DEFAULT_SLEEP_SECONDS
    suspend_memory_gib: float | None = None
    max_body_size: str | None = None
    webhook_allow: tuple[str, ...] = ()
    ray: str | None = None
    """A Ray cluster's address (``auto``: ``RAY_ADDRESS`` or a local one) to place runners on."""
    access_log: bool = False
    watch: bool = False
    """Deploy a new revision when the app file changes (``fleet/deployer.py``)."""
    queue_store: str | None = None
    """``--queue-store`` (``job_store.choice``); None: SQLite in the data dir."""
    queue_retention: float = DEFAULT_RETENTION_SECONDS
    queue_retention_size: str | None = None
    """Bytes of answered requests kept, like ``1GB``; None: ``DEFAULT_RETENTION_BYTES``."""
    more_apps: tuple[str, ...] = ()
    """Apps served behind the same gateway, each at ``/<owner>/<app>/`` (``gateway_group``)."""


def scaling_settings(
    manifest: AppManifest,
    workers: int | None,
    gpus: list[str],
    hard_cap: int | None = None,
    suspended_keep_alive: float = DEFAULT_SUSPENDED_KEEP_ALIVE,
    suspended_memory_budget: int | None = None,
) -> ScalingSettings:
    """``--workers N``: a fixed fleet. Otherwise the App's own settings (scale from zero,
    min/max_concurrency, buffers, scaling_delay, keep_alive), capped by what this machine holds
    (or ``hard_cap``, a Ray cluster's): one runner per GPU group for a GPU app, else one per CPU
    core. Suspended runners: ``suspended_keep_alive`` seconds, ``suspended_memory_budget``
    bytes (None: half of the memory available now)."""
    suspension = {
        "suspended_keep_alive": suspended_keep_alive,
        "suspended_memory_budget": suspended_memory_budget or half_available_memory(),
    }
    if workers is not None:
        return dataclasses.replace(ScalingSettings.fixed(workers), **suspension)
    settings = manifest.settings
    if hard_cap is None and gpus and settings.gpus_per_runner > 0:
        hard_cap = max(1, len(gpus) // settings.gpus_per_runner)
    elif hard_cap is None:
        hard_cap = os.cpu_count() or 1
    return ScalingSettings(
        min_concurrency=settings.min_concurrency,
        max_concurrency=settings.max_concurrency,
        concurrency_buffer=settings.concurrency_buffer,
        concurrency_buffer_perc=settings.concurrency_buffer_perc,
        scaling_delay=settings.scaling_delay,
        keep_alive=settings.keep_alive,
        max_multiplexing=settings.max_multiplexing,
        hard_cap=hard_cap,
        **suspension,
    )


def ray_environment(address: str, ray_address: str | None = None) -> dict[str, str]:
    """What Ray must read before it is imported to join the cluster at ``address`` (``auto``
    is ``ray_address``, Ray's ``RAY_ADDRESS``, when that is set).

    Ray turns a loopback address into this machine's external IP when it connects, unless it
    believes it runs on one machine only (its Windows/macOS switch). A loopback address is only
    reachable on this machine, so for one the switch is on: the driver stays on loopback too.
    """
    if address == "auto" and ray_address:
        address = ray_address
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return {}


def half_available_memory() -> int | None:
    """Half of ``MemAvailable`` now (the default budget of suspended runners)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        return None
    return None


def join_ray_cluster(address: str, gpus_per_runner: int) -> RayCluster | None:
    """Connect to the cluster; None (said on stderr) when Ray is missing or there is none."""
    # Ray reads its settings from the environment when it is first imported, just below.
    export_to_process(ray_environment(address, os.environ.get("RAY_ADDRESS")))
    try:
        from minifal.fleet.backends import ray_actors
    except ImportError:
        print("minifal: --ray needs Ray: pip install 'minifal[ray]'", file=sys.stderr)
        return None
    try:
        return ray_actors.join_cluster(address, gpus_per_runner)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"minifal: cannot join the Ray cluster at {address}: {exc}", file=sys.stderr)
        return None


def inspect_apps(references: tuple[str, ...]) -> list[AppManifest] | None:
    """Every app's manifest (each in its own child process, at once); None when one cannot be
    loaded (said on stderr)."""
    with ThreadPoolExecutor(max_workers=len(references)) as pool:
        futures = [pool.submit(inspect_app, reference) for reference in references]
    manifests = []
    for reference, future in zip(references, futures, strict=True):
        try:
            manifests.append(future.result())
        except ManifestError as exc:
            print(f"minifal: cannot load {reference}:\n{exc}", file=sys.stderr)
            return None
    return manifests


def several_apps_problem(manifests: list[AppManifest], ray: str | None) -> str | None:
    """Why these apps cannot be served behind one gateway, or None."""
    names = [manifest.app_name for manifest in manifests]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        return f"two apps are named {', '.join(twice)}: an app's name is its path (/<owner>/<app>/)"
    bad = [name for name in names if not APP_NAME.fullmatch(name)]
    if bad:
        return f"app name {bad[0]!r}: letters, digits, '.', '_' and '-' only (it is a path)"
    if ray is not None:
        return "--ray serves one app per gateway for now"
    return None


def run_fleet(arguments: FleetArguments) -> int:
    configure_logging()
    if bool(arguments.tls_cert) != bool(arguments.tls_key):
        print("minifal: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    data_dir = activate_data_dir(resolve_data_dir(arguments.data_dir))
    run_id = time.strftime("%Y%m%d-%H%M%S")
    logger.info("data dir: %s (run %s)", data_dir, run_id)
    references = (arguments.app, *arguments.more_apps)
    local_gpus = arguments.ray is None and arguments.gpus is None
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="host-probe") as probes:
        # The host's probes run beside the apps' inspection rather than after it: each takes
        # up to a second (nvidia-smi, cuInit) before the first runner can start.
        found_gpus = probes.submit(detect_gpus) if local_gpus else None
        if local_gpus and arguments.suspend != "off":
            probes.submit(host_cuda_checkpoint)  # the gateway's choose_suspender gets its answer
        manifests = inspect_apps(references)
    if manifests is None:
        return 2
    several = len(manifests) > 1
    problem = several_apps_problem(manifests, arguments.ray) if several else None
    if problem:
        print(f"minifal: {problem}", file=sys.stderr)
        return 2
    gpus_per_runner = max(manifest.settings.gpus_per_runner for manifest in manifests)
    if arguments.workers is not None and arguments.workers < 1:
        print("minifal: --workers must be at least 1", file=sys.stderr)
        return 2
    cluster: RayCluster | None = None
    if arguments.ray is not None and arguments.gpus is not None:
        print("minifal: --gpus picks this machine's GPUs; with --ray, Ray does", file=sys.stderr)
        return 2
    if arguments.ray is not None:
        cluster = join_ray_cluster(arguments.ray, gpus_per_runner)
        if cluster is None:
            return 2
        gpus: list[str] = []
    else:
        gpus = (
            [gpu.strip() for gpu in arguments.gpus.split(",") if gpu.strip()]
            if found_gpus is None
            else found_gpus.result()
        )
        for manifest in manifests:
            if manifest.settings.gpus_per_runner > 0 and not gpus:
                logger.warning(
                    "%s wants a GPU but none is visible: runners run on CPU", manifest.app_name
                )
    auth_key = arguments.auth_key or envs.AUTH_KEY.get()
    if any(manifest.settings.app_auth == "private" for manifest in manifests) and not auth_key:
        auth_key = secrets.token_urlsafe(24)
        logger.warning("app_auth='private': requests need 'Authorization: Key %s'", auth_key)
    warning = exposure_warning(arguments.host, arguments.port, auth_key)
    if warning:
        logger.warning("%s", warning)
    try:
        max_body_bytes = configured_max_body_bytes(arguments.max_body_size)
    except ValueError as exc:
        print(f"minifal: --max-body-size: {exc}", file=sys.stderr)
        return 2
    try:
        webhook_policy = WebhookPolicy.for_gateway(arguments.host, arguments.webhook_allow)
    except ValueError as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 2
    try:
        retention = Retention(
            arguments.queue_retention,
            parse_size(arguments.queue_retention_size)
            if arguments.queue_retention_size
            else DEFAULT_RETENTION_BYTES,
        )
        job_stores = [
            job_store_for(
                arguments.queue_store,
                data_dir,
                retention,
                manifest.app_name if several else None,
            )
            for manifest in manifests
        ]
        for job_store in job_stores:
            check_reachable(job_store)
    except (ValueError, StoreUnavailable) as exc:
        print(f"minifal: --queue-store: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if arguments.tls_cert else "http"
    url_host = "127.0.0.1" if arguments.host in ("0.0.0.0", "::") else arguments.host
    public_url = f"{scheme}://{url_host}:{arguments.port}/"
    (data_dir / "runs" / run_id).mkdir(parents=True, exist_ok=True)
    shared_pool = GpuPool(gpus, 0) if several else None  # each app asks for its own count
    gateways: dict[str, Gateway] = {}
    for reference, manifest, job_store in zip(references, manifests, job_stores, strict=True):
        scaling = scaling_settings(
            manifest,
            arguments.workers,
            gpus,
            cluster.hard_cap if cluster else None,
            arguments.suspended_keep_alive,
            int(arguments.suspend_memory_gib * 2**30) if arguments.suspend_memory_gib else None,
        )
        options = GatewayOptions(
            app_reference=reference,
            data_dir=data_dir,
            run_id=run_id,
            public_url=public_url,
            scaling=scaling,
            gpus=gpus,
            auth_key=auth_key,
            max_queue=arguments.max_queue if arguments.max_queue else None,
            suspend=arguments.suspend,
            suspend_sleep_s=arguments.suspend_sleep_s,
            max_body_bytes=max_body_bytes,
            webhook_policy=webhook_policy,
            job_store=job_store,
            ray_resources=cluster.resources if cluster else None,
            watch=arguments.watch,
            gpu_pool=shared_pool,
            runner_prefix=runner_prefix(manifest.app_name) if several else "runner",
        )
        gateways[manifest.app_name] = Gateway(manifest, options)
        path = f"<owner>/{manifest.app_name}/" if several else ""
        logger.info(
            "serving %s at %s%s with %s %s",
            manifest.app_name,
            public_url,
            path,
            describe_fleet(scaling, arguments.workers),
            describe_place(cluster, gpus, manifest.settings.gpus_per_runner),
        )
    write_run_file(data_dir / "runs" / run_id, references, gateways, gpus, cluster)
    if several:
        gpu_pool = SharedGpuPool(
            gpus,
            host_memory_budget=int(arguments.suspend_memory_gib * 2**30)
            if arguments.suspend_memory_gib
            else half_available_memory(),
        )
        group = GatewayGroup(gateways, run_id, gpu_pool)
        asgi_app = build_group_app(group, auth_key, max_body_bytes)
        grace_seconds, on_exit = group.grace_seconds, group.begin_shutdown
    else:
        gateway = next(iter(gateways.values()))
        asgi_app = build_gateway_app(gateway)
        grace_seconds, on_exit = gateway.grace_seconds, gateway.begin_shutdown
    config = uvicorn.Config(
        asgi_app,
        host=arguments.host,
        port=arguments.port,
        ssl_certfile=arguments.tls_cert,
        ssl_keyfile=arguments.tls_key,
        timeout_graceful_shutdown=int(grace_seconds),
        log_level="info",
        access_log=arguments.access_log,
    )
    server = QuietExitServer(config, on_exit=on_exit)
    server.run()
    return 0 if server.started else 1


def describe_fleet(scaling: ScalingSettings, workers: int | None) -> str:
    if workers is not None:
        return f"{workers} runner(s)"
    upper = min(c for c in (scaling.max_concurrency, scaling.hard_cap) if c is not None)
    return f"{scaling.min_concurrency}..{upper} runners (keep_alive {scaling.keep_alive:g} s)"


def describe_place(cluster: RayCluster | None, gpus: list[str], gpus_per_runner: int) -> str:
    if cluster is not None:
        return cluster.describe()
    if gpus and gpus_per_runner:
        return f"on GPUs {','.join(gpus)}"
    return "on CPU"


def write_run_file(
    run_dir: Path,
    references: tuple[str, ...],
    gateways: dict[str, Gateway],
    gpus: list[str],
    cluster: RayCluster | None,
) -> None:
    """``runs/<run>/run.json``: what was served (each app's reference and scaling) and where."""
    apps = [
        {"app": name, "reference": reference, "scaling": asdict(gateway.options.scaling)}
        for reference, (name, gateway) in zip(references, gateways.items(), strict=True)
    ]
    where = {"gpus": gpus, "ray": cluster.summary() if cluster else None}
    run = {**apps[0], **where} if len(apps) == 1 else {"apps": apps, **where}
    (run_dir / "run.json").write_text(json.dumps(run))
