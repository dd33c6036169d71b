"""``minifal run``: inspect the app, start the gateway and its runners, serve until stopped."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass

import uvicorn

from minifal.app_manifest import AppManifest, ManifestError, inspect_app
from minifal.data_dir import activate_data_dir, resolve_data_dir
from minifal.fleet.auth import ENV_AUTH_KEY
from minifal.fleet.gateway import Gateway, GatewayOptions
from minifal.fleet.gpu_pool import detect_gpus
from minifal.fleet.http_api import build_gateway_app
from minifal.fleet.request_queue import DEFAULT_MAX_QUEUE
from minifal.fleet.scaler import ScalingSettings
from minifal.log_format import configure_logging
from minifal.quiet_exit_server import QuietExitServer
from minifal.runner_contract import DEFAULT_HOST, DEFAULT_PORT

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
    access_log: bool = False


def scaling_settings(
    manifest: AppManifest, workers: int | None, gpus: list[str]
) -> ScalingSettings:
    """``--workers N``: a fixed fleet. Otherwise the App's own settings (scale from zero,
    min/max_concurrency, buffers, scaling_delay, keep_alive), capped by what this machine holds:
    one runner per GPU group for a GPU app, else one per CPU core."""
    if workers is not None:
        return ScalingSettings.fixed(workers)
    settings = manifest.settings
    if gpus and settings.gpus_per_runner > 0:
        hard_cap = max(1, len(gpus) // settings.gpus_per_runner)
    else:
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
    )


def run_fleet(arguments: FleetArguments) -> int:
    configure_logging()
    if bool(arguments.tls_cert) != bool(arguments.tls_key):
        print("minifal: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    data_dir = activate_data_dir(resolve_data_dir(arguments.data_dir))
    run_id = time.strftime("%Y%m%d-%H%M%S")
    logger.info("data dir: %s (run %s)", data_dir, run_id)
    try:
        manifest = inspect_app(arguments.app)
    except ManifestError as exc:
        print(f"minifal: cannot load {arguments.app}:\n{exc}", file=sys.stderr)
        return 2
    settings = manifest.settings
    gpus = (
        [gpu.strip() for gpu in arguments.gpus.split(",") if gpu.strip()]
        if arguments.gpus is not None
        else detect_gpus()
    )
    if settings.gpus_per_runner > 0 and not gpus:
        logger.warning("%s wants a GPU but none is visible: runners run on CPU", manifest.app_name)
    if arguments.workers is not None and arguments.workers < 1:
        print("minifal: --workers must be at least 1", file=sys.stderr)
        return 2
    scaling = scaling_settings(manifest, arguments.workers, gpus)
    auth_key = arguments.auth_key or os.environ.get(ENV_AUTH_KEY)
    if settings.app_auth == "private" and not auth_key:
        auth_key = secrets.token_urlsafe(24)
        logger.warning("app_auth='private': requests need 'Authorization: Key %s'", auth_key)
    scheme = "https" if arguments.tls_cert else "http"
    url_host = "127.0.0.1" if arguments.host in ("0.0.0.0", "::") else arguments.host
    public_url = f"{scheme}://{url_host}:{arguments.port}/"
    options = GatewayOptions(
        app_reference=arguments.app,
        data_dir=data_dir,
        run_id=run_id,
        public_url=public_url,
        scaling=scaling,
        gpus=gpus,
        auth_key=auth_key,
        max_queue=arguments.max_queue if arguments.max_queue else None,
    )
    run_dir = data_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "app": manifest.app_name,
                "reference": arguments.app,
                "scaling": asdict(scaling),
                "gpus": gpus,
            }
        )
    )
    gateway = Gateway(manifest, options)
    where = f"on GPUs {','.join(gpus)}" if options.gpus and settings.gpus_per_runner else "on CPU"
    if arguments.workers is not None:
        fleet = f"{arguments.workers} runner(s)"
    else:
        upper = min(c for c in (scaling.max_concurrency, scaling.hard_cap) if c is not None)
        fleet = f"{scaling.min_concurrency}..{upper} runners (keep_alive {scaling.keep_alive:g} s)"
    logger.info("serving %s at %s with %s %s", manifest.app_name, public_url, fleet, where)
    config = uvicorn.Config(
        build_gateway_app(gateway),
        host=arguments.host,
        port=arguments.port,
        ssl_certfile=arguments.tls_cert,
        ssl_keyfile=arguments.tls_key,
        timeout_graceful_shutdown=int(gateway.grace_seconds),
        log_level="info",
        access_log=arguments.access_log,
    )
    server = QuietExitServer(config)
    server.run()
    return 0 if server.started else 1
