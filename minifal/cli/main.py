"""The ``minifal`` command."""

from __future__ import annotations

import argparse
import os
import sys

from minifal import __version__
from minifal.fleet.job_store.choice import ENV_QUEUE_STORE
from minifal.fleet.job_store.rules import DEFAULT_RETENTION_SECONDS
from minifal.fleet.request_queue import DEFAULT_MAX_QUEUE
from minifal.fleet.scaler import DEFAULT_SUSPENDED_KEEP_ALIVE
from minifal.runner_contract import DEFAULT_HOST, DEFAULT_PORT

ENV_SUSPEND = "MINIFAL_SUSPEND"

MAX_BODY_HELP = (
    "the largest request body read; larger ones get 413 (50MB, 512KiB, bytes; "
    "default $MINIFAL_MAX_BODY_SIZE or 50MiB)"
)
APP_HELP = (
    "path/to/app.py, path/to/app.py::ClassName, or an app name of the project's "
    "pyproject.toml ([tool.fal.apps.NAME])"
)


def _serve(args: argparse.Namespace) -> int:
    from minifal.host.body_limit import ENV_MAX_BODY_SIZE, parse_size
    from minifal.runner.app_loader import AppLoadError
    from minifal.runner.server import serve
    from minifal.settings import AppSettingsError

    if args.max_body_size:
        try:
            os.environ[ENV_MAX_BODY_SIZE] = str(parse_size(args.max_body_size))
        except ValueError as exc:
            print(f"minifal: --max-body-size: {exc}", file=sys.stderr)
            return 2
    try:
        return serve(args.app, host=args.host, port=args.port, data_dir=args.data_dir)
    except (AppLoadError, AppSettingsError) as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from minifal.fleet.launcher import FleetArguments, run_fleet

    return run_fleet(
        FleetArguments(
            app=args.app,
            host=args.host,
            port=args.port,
            workers=args.workers,
            gpus=args.gpus,
            data_dir=args.data_dir,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            auth_key=args.auth_key,
            max_queue=args.max_queue,
            suspend=args.suspend,
            suspended_keep_alive=args.suspend_keep_alive,
            suspend_memory_gib=args.suspend_memory_gib,
            max_body_size=args.max_body_size,
            webhook_allow=tuple(args.webhook_allow or ()),
            ray=args.ray,
            access_log=args.access_log,
            queue_store=args.queue_store,
            queue_retention=args.queue_retention,
            queue_retention_size=args.queue_retention_size,
        )
    )


def _dockerfile(args: argparse.Namespace) -> int:
    import inspect
    from pathlib import Path

    from minifal.cli.dockerfile_export import DockerfileExportError, export_dockerfile
    from minifal.host.log_format import configure_logging
    from minifal.runner.app_loader import AppLoadError, load_app_class
    from minifal.settings import AppSettingsError

    configure_logging()
    try:
        app_class = load_app_class(args.app)
        written = export_dockerfile(
            app_class,
            Path(inspect.getfile(app_class)),
            args.app,
            Path(args.output) if args.output else None,
        )
    except (AppLoadError, AppSettingsError, DockerfileExportError, OSError) as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written.dockerfile} (and {written.build_dir}/)")
    print(f"build it: {written.build_command}")
    return 0


def _startup_report(args: argparse.Namespace) -> int:
    from minifal.cli.startup_report import main_startup_report

    return main_startup_report(args)


def _runners(args: argparse.Namespace) -> int:
    from minifal.cli.runners_table import main_runners

    return main_runners(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minifal", description=__doc__)
    parser.add_argument("--version", action="version", version=f"minifal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve one App with one runner, in the foreground")
    serve.add_argument("app", help=APP_HELP)
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument(
        "--data-dir", help="shared data dir (default: $MINIFAL_DATA_DIR, /data, ./.minifal/data)"
    )
    serve.add_argument("--max-body-size", help=MAX_BODY_HELP)
    serve.set_defaults(handler=_serve)

    run = commands.add_parser("run", help="serve an App with a gateway and a fleet of runners")
    run.add_argument("app", help=APP_HELP)
    run.add_argument("--host", default=DEFAULT_HOST)
    run.add_argument("--port", type=int, default=DEFAULT_PORT)
    run.add_argument(
        "--workers",
        type=int,
        help="a fixed number of runners (default: scale by the App's settings)",
    )
    run.add_argument("--gpus", help="GPU indices to use, e.g. 0,1 (default: all visible)")
    run.add_argument("--data-dir", help="shared data dir of every runner")
    run.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    run.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    run.add_argument("--auth-key", help="require 'Authorization: Key <key>' (or $MINIFAL_AUTH_KEY)")
    run.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="queued requests beyond this get 429 (0: no limit)",
    )
    run.add_argument(
        "--suspend",
        choices=("auto", "on", "off"),
        default=os.environ.get(ENV_SUSPEND, "auto"),
        help="suspend idle runners to host memory instead of stopping them (auto: where the "
        "CUDA driver can; $MINIFAL_SUSPEND)",
    )
    run.add_argument(
        "--suspend-keep-alive",
        type=float,
        default=DEFAULT_SUSPENDED_KEEP_ALIVE,
        help="seconds a runner stays suspended before it is stopped (default %(default)g)",
    )
    run.add_argument(
        "--suspend-memory-gib",
        type=float,
        help="host memory suspended runners may hold, in GiB (default: half of what is free)",
    )
    run.add_argument("--max-body-size", help=MAX_BODY_HELP)
    run.add_argument(
        "--webhook-allow",
        action="append",
        metavar="NET",
        help="?fal_webhook= may also reach these private/loopback addresses: 'private', "
        "'loopback' or networks like 10.0.0.0/8 (repeatable). Loopback is allowed when the "
        "gateway listens on loopback; link-local and cloud-metadata addresses never are",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="place runners on a Ray cluster (ADDRESS default auto: $RAY_ADDRESS or a cluster "
        "running on this machine); DATA_DIR must be shared by its nodes (docs/ray.md)",
    )
    run.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request (off by default: it costs the gateway ~5%% of a request)",
    )
    run.add_argument(
        "--queue-store",
        default=os.environ.get(ENV_QUEUE_STORE),
        metavar="STORE",
        help="where queue requests are kept: sqlite (default: DATA_DIR/queue), "
        "sqlite:///DIR, redis://HOST:PORT/DB (shared by several gateways) or memory "
        "($MINIFAL_QUEUE_STORE; docs/queue.md)",
    )
    run.add_argument(
        "--queue-retention",
        type=float,
        default=DEFAULT_RETENTION_SECONDS,
        metavar="SECONDS",
        help="seconds an answered queue request's status and result are kept (default %(default)g)",
    )
    run.add_argument(
        "--queue-retention-size",
        metavar="SIZE",
        help="bytes of answered queue requests kept, oldest forgotten first (default 1GB)",
    )
    run.set_defaults(handler=_run)

    dockerfile = commands.add_parser(
        "dockerfile",
        help="write a Dockerfile: the App's ContainerImage plus minifal serving the App",
    )
    dockerfile.add_argument("app", help=APP_HELP)
    dockerfile.add_argument(
        "-o", "--output", help="where to write it (default: <image context dir>/Dockerfile.minifal)"
    )
    dockerfile.set_defaults(handler=_dockerfile)

    report = commands.add_parser(
        "startup-report", help="startup phases of a run's runners, side by side"
    )
    report.add_argument("--run", help="run id under DATA_DIR/runs/ (default: the latest)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument(
        "--png", help="timeline image (default: DATA_DIR/runs/<run-id>/startup.png)"
    )
    report.add_argument("--data-dir", help="shared data dir (default as for run)")
    report.set_defaults(handler=_startup_report)

    runners = commands.add_parser(
        "runners", help="a running gateway's runners, as fal runners list"
    )
    runners.add_argument(
        "--url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", help="the gateway's base URL"
    )
    runners.add_argument("--json", action="store_true", help="print the gateway's JSON as is")
    runners.add_argument(
        "--auth-key", help="sent as 'Authorization: Key <key>' ($MINIFAL_AUTH_KEY)"
    )
    runners.set_defaults(handler=_runners)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
