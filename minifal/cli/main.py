"""The ``minifal`` command."""

from __future__ import annotations

import argparse
import sys

from minifal.fleet.job_store.rules import DEFAULT_RETENTION_SECONDS
from minifal.fleet.request_queue import DEFAULT_MAX_QUEUE
from minifal.fleet.runner_suspension import DEFAULT_SLEEP_SECONDS
from minifal.fleet.scaler import DEFAULT_SUSPENDED_KEEP_ALIVE
from minifal.host import envs
from minifal.runner_contract import DEFAULT_HOST, DEFAULT_PORT
from minifal.version import __version__

MAX_BODY_HELP = (
    "the largest request body read; larger ones get 413 (50MB, 512KiB, bytes; "
    f"default ${envs.MAX_BODY_SIZE.name} or {envs.MAX_BODY_SIZE.default})"
)
DATA_DIR_HELP = f"shared data dir (default: ${envs.DATA_DIR.name}, /data, ./.minifal/data)"
APP_HELP = (
    "path/to/app.py, path/to/app.py::ClassName, or an app name of the project's "
    "pyproject.toml ([tool.fal.apps.NAME])"
)


def _serve(args: argparse.Namespace) -> int:
    from minifal.host.body_limit import configured_max_body_bytes
    from minifal.runner.app_loader import AppLoadError
    from minifal.runner.server import serve
    from minifal.settings import AppSettingsError

    try:
        max_body_bytes = configured_max_body_bytes(args.max_body_size)
    except ValueError as exc:
        print(f"minifal: --max-body-size: {exc}", file=sys.stderr)
        return 2
    try:
        return serve(
            args.app,
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            max_body_bytes=max_body_bytes,
        )
    except (AppLoadError, AppSettingsError) as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from minifal.compat.project import ProjectError, project_app_names
    from minifal.fleet.launcher import FleetArguments, run_fleet

    try:
        apps = args.apps or project_app_names()
    except ProjectError as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 2
    return run_fleet(
        FleetArguments(
            app=apps[0],
            more_apps=tuple(apps[1:]),
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
            suspend_sleep_s=args.suspend_sleep,
            suspend_memory_gib=args.suspend_memory_gib,
            max_body_size=args.max_body_size,
            webhook_allow=tuple(args.webhook_allow or ()),
            ray=args.ray,
            access_log=args.access_log,
            watch=args.watch,
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


def _check(args: argparse.Namespace) -> int:
    from minifal.compat.app_check import check_app

    report = check_app(args.app)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _startup_report(args: argparse.Namespace) -> int:
    from minifal.cli.startup_report import main_startup_report

    return main_startup_report(args)


def _deploy(args: argparse.Namespace) -> int:
    from minifal.cli.deploy import main_deploy

    return main_deploy(args)


def _runners(args: argparse.Namespace) -> int:
    from minifal.cli.runners_table import main_runners

    return main_runners(args)


def _suspend_default() -> str:
    """``$MINIFAL_SUSPEND``; a value that is none of the choices is said, and ``auto`` used."""
    try:
        return envs.SUSPEND.get()
    except ValueError as exc:
        print(f"minifal: {exc}; using {envs.SUSPEND.default}", file=sys.stderr)
        return envs.SUSPEND.default


def seconds(text: str) -> float:
    """A command-line number of seconds: ``0`` or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minifal", description=__doc__)
    parser.add_argument("--version", action="version", version=f"minifal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve one App with one runner, in the foreground")
    serve.add_argument("app", help=APP_HELP)
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--data-dir", help=DATA_DIR_HELP)
    serve.add_argument("--max-body-size", help=MAX_BODY_HELP)
    serve.set_defaults(handler=_serve)

    run = commands.add_parser(
        "run", help="serve Apps with a gateway and a fleet of runners per App"
    )
    run.add_argument(
        "apps",
        nargs="*",
        metavar="app",
        help=APP_HELP + ". Several: each at /<owner>/<app>/ behind one gateway. None: every "
        "app of the project's pyproject.toml",
    )
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
    run.add_argument(
        "--auth-key", help=f"require 'Authorization: Key <key>' (or ${envs.AUTH_KEY.name})"
    )
    run.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="queued requests beyond this get 429 (0: no limit)",
    )
    run.add_argument(
        "--suspend",
        choices=("auto", "on", "off"),
        default=_suspend_default(),
        help="suspend idle runners to host memory instead of stopping them (auto: where the "
        f"CUDA driver can; ${envs.SUSPEND.name})",
    )
    run.add_argument(
        "--suspend-keep-alive",
        type=float,
        default=DEFAULT_SUSPENDED_KEEP_ALIVE,
        help="seconds a runner stays suspended before it is stopped (default %(default)g)",
    )
    run.add_argument(
        "--suspend-sleep",
        type=seconds,
        default=DEFAULT_SLEEP_SECONDS,
        metavar="SECONDS",
        help="a suspended runner whose App keeps its weights in arenas sleeps this long first: "
        "weights in pinned host memory, its CUDA context and graphs still on its GPU, back in "
        "about the time the weights take to cross the link; then the driver's checkpoint takes "
        "the rest (0: at once; default %(default)g)",
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
        "--watch",
        action="store_true",
        help="deploy a new revision (rolling) when the app file changes (development)",
    )
    run.add_argument(
        "--queue-store",
        default=envs.QUEUE_STORE.raw(),
        metavar="STORE",
        help="where queue requests are kept: sqlite (default: DATA_DIR/queue), "
        "sqlite:///DIR, redis://HOST:PORT/DB (shared by several gateways) or memory "
        f"(${envs.QUEUE_STORE.name}; docs/queue.md)",
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

    check = commands.add_parser(
        "check",
        help="load an App as the gateway does (no setup()) and say what would stop it: "
        "minifal's gaps apart from the app's own missing dependencies; exit 1 if anything",
    )
    check.add_argument("app", help=APP_HELP)
    check.set_defaults(handler=_check)

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
        "--auth-key", help=f"sent as 'Authorization: Key <key>' (${envs.AUTH_KEY.name})"
    )
    runners.set_defaults(handler=_runners)

    deploy = commands.add_parser(
        "deploy", help="a running gateway takes a new revision of its app, as fal deploy"
    )
    deploy.add_argument("app", help=APP_HELP + "; read on the gateway's machine")
    deploy.add_argument(
        "--url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", help="the gateway's base URL"
    )
    deploy.add_argument(
        "--app-name",
        metavar="NAME",
        help="which app of a gateway that serves several (default: the app APP is)",
    )
    deploy.add_argument(
        "--strategy",
        choices=("rolling", "recreate"),
        default="rolling",
        help="rolling: new runners take traffic as they get ready, old ones drain (default); "
        "recreate: old runners drain first, requests wait in the queue",
    )
    deploy.add_argument(
        "--auth-key", help=f"sent as 'Authorization: Key <key>' (${envs.AUTH_KEY.name})"
    )
    deploy.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds to follow the rollout before giving up waiting (default 900)",
    )
    deploy.set_defaults(handler=_deploy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
