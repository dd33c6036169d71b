"""Run one App under uvicorn in this process: ``minifal serve`` and each runner of a fleet.

Lifecycle: import the app file, build its FastAPI app, ``setup()`` (uvicorn's lifespan, before the
port opens), serve; on SIGINT/SIGTERM call ``handle_exit()``, drain in-flight requests (bounded by
the grace period), then ``teardown()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from minifal.app import App
from minifal.compat.requirements_check import unmet_requirements
from minifal.compiled.bytecode_cache import enable_bytecode_cache
from minifal.host import envs
from minifal.host.body_limit import configured_max_body_bytes
from minifal.host.data_dir import activate_data_dir, resolve_data_dir
from minifal.host.log_format import configure_logging
from minifal.host.quiet_exit_server import QuietExitServer
from minifal.runner import request_logs
from minifal.runner.app_loader import load_app_class
from minifal.runner.asgi import build_asgi_app
from minifal.runner.import_record import library_modules, record_path, write_record
from minifal.runner_contract import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    EXIT_SETUP_FAILED,
    EXIT_STARTUP_TIMEOUT,
    RUNNER_KEEP_ALIVE_SECONDS,
    export_to_process,
)
from minifal.startup import events as startup_events

logger = logging.getLogger("minifal.runner")


class RunnerServer(QuietExitServer):
    """uvicorn's server, plus fal's ``handle_exit()`` hook and the ``ready`` startup event."""

    def __init__(
        self, config: uvicorn.Config, app: App, on_ready: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.app_instance = app
        self.exit_notified = False
        self.on_ready = on_ready

    def handle_exit(self, sig: int, frame: object) -> None:
        if not self.exit_notified:
            self.exit_notified = True
            try:
                self.app_instance.handle_exit()
            except Exception:
                logger.exception("handle_exit() failed")
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:  # uvicorn logs where it listens only when it binds itself
            where = " and ".join(str(sock.getsockname()) for sock in sockets)
            logger.info("Uvicorn running on %s", where)
        if self.started:
            startup_events.record("ready", time.time())
            logger.info("runner ready on %s", envs.PUBLIC_URL.get() or "")
            if self.on_ready is not None:
                self.on_ready()


def _identity_environment(data_dir: Path, host: str, port: int) -> dict[str, str]:
    """Who this runner is: what its fleet set (the runner contract), else, under ``minifal
    serve``, the one runner of a run of its own."""
    run_id = envs.RUN_ID.get() or time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    runner_id = envs.RUNNER_ID.raw() or "runner-0"
    events_file = envs.EVENTS_FILE.get() or startup_events.runner_events_file(
        data_dir / "runs" / run_id, runner_id
    )
    return {
        envs.RUN_ID.name: run_id,
        envs.RUNNER_ID.name: runner_id,
        envs.EVENTS_FILE.name: str(events_file),
        envs.PUBLIC_URL.name: envs.PUBLIC_URL.get() or f"http://{host}:{port}/",
    }


def _record_imports(data_dir: Path, reference: str, library_path: list[str]) -> None:
    """Keep the modules this runner imported, for the next fleet's fork server to import."""
    app_directory = os.path.dirname(os.path.abspath(reference.split("::", 1)[0]))
    path = [entry for entry in library_path if os.path.abspath(entry or ".") != app_directory]
    try:
        write_record(record_path(data_dir, reference), library_modules(dict(sys.modules), path))
    except OSError as error:
        logger.warning("could not record this runner's imports: %s", error)


def _watch_startup_deadline(deadline: float, server: RunnerServer, timeout: float) -> None:
    """fal's local mode only warns; minifal stops a runner whose setup() outlives the timeout."""

    def watch() -> None:
        while not server.started and not server.should_exit:
            if time.time() > deadline:
                logger.error("setup() exceeded startup_timeout=%ss: stopping this runner", timeout)
                startup_events.record("startup_timeout", time.time(), timeout_s=timeout)
                os._exit(EXIT_STARTUP_TIMEOUT)
            time.sleep(0.5)

    threading.Thread(target=watch, name="minifal-startup-deadline", daemon=True).start()


def _listening_sockets(host: str, port: int, unix_socket: str) -> list[socket.socket]:
    """The port and the unix socket, bound now, listening once ``setup()`` has run."""
    tcp = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(unix_socket)
    unix.bind(unix_socket)
    os.chmod(unix_socket, 0o600)
    return [tcp, unix]


def serve(
    reference: str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    data_dir: str | None = None,
    log_level: str = "info",
    unix_socket: str | None = None,
    behind_gateway: bool = False,
    max_body_bytes: int | None = None,
) -> int:
    """Serve the App in the foreground; the return value is the process exit code.

    ``max_body_bytes`` None: ``$MINIFAL_MAX_BODY_SIZE`` (a fleet's runners get the gateway's
    limit there), else the default."""
    process_start = startup_events.process_start_time()
    library_path = list(sys.path)  # before the App's directory goes first
    configure_logging()
    # Behind a gateway, each request's lines go to it marked (request_logs.py), from before the
    # app's import (its own stream handlers write to the tagged streams); alone, as printed.
    lines = request_logs.install() if behind_gateway else None
    data = activate_data_dir(resolve_data_dir(data_dir))
    enable_bytecode_cache(data)  # before the app's imports
    export_to_process(_identity_environment(data, host, port))  # its workers inherit it
    if max_body_bytes is None:
        max_body_bytes = configured_max_body_bytes()
    logger.info("data dir: %s", data)
    startup_events.record(
        "process_start", process_start, node=envs.NODE.get(), revision=envs.REVISION.get()
    )
    startup_events.record("imports", process_start, time.time())

    with startup_events.phase("app_import", reference=reference):
        app_class = load_app_class(reference)
    settings = app_class.settings()
    for problem in unmet_requirements(settings.requirements):
        logger.warning("requirement not met (install it yourself): %s", problem)

    app = app_class()
    api = build_asgi_app(app, max_body_bytes=max_body_bytes, freeze_collector=True, lines=lines)
    grace = settings.termination_grace_period_seconds or DEFAULT_GRACE_SECONDS
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(grace),
        lifespan="on",
        # Behind a gateway: its pooled connections stay open; it logs what callers asked.
        access_log=not behind_gateway,
        timeout_keep_alive=RUNNER_KEEP_ALIVE_SECONDS if behind_gateway else 5,
    )
    on_ready = (lambda: _record_imports(data, reference, library_path)) if behind_gateway else None
    server = RunnerServer(config, app, on_ready)
    if settings.startup_timeout:
        deadline = process_start + settings.startup_timeout
        # the compiled cache's waits (in this process and its workers) end before it
        export_to_process({envs.STARTUP_DEADLINE.name: str(deadline)})
        _watch_startup_deadline(deadline, server, settings.startup_timeout)
    sockets = None if unix_socket is None else _listening_sockets(host, port, unix_socket)
    try:
        server.run(sockets=sockets)
    except SystemExit:  # uvicorn's way of saying that the lifespan's startup failed
        if server.started:
            raise
    finally:
        if unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(unix_socket)
    if not server.started:
        _exit_after_failed_setup()
    return 0


def _exit_after_failed_setup() -> None:
    """A runner whose ``setup()`` raised exits now, with the code that says so. Threads the
    app started (a downloader, a pool) would otherwise keep the interpreter alive, and the
    fleet would see a runner that neither starts nor exits until its startup_timeout."""
    logger.error("setup() failed: exiting (code %d)", EXIT_SETUP_FAILED)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_SETUP_FAILED)
