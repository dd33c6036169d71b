"""The ``minifal`` command."""

from __future__ import annotations

import argparse
import sys

from minifal import __version__


def _serve(args: argparse.Namespace) -> int:
    from minifal.app_loader import AppLoadError
    from minifal.runner.server import serve
    from minifal.settings import AppSettingsError

    try:
        return serve(args.app, host=args.host, port=args.port, data_dir=args.data_dir)
    except (AppLoadError, AppSettingsError) as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minifal", description=__doc__)
    parser.add_argument("--version", action="version", version=f"minifal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve one App with one runner, in the foreground")
    serve.add_argument("app", help="path/to/app.py or path/to/app.py::ClassName")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--data-dir", help="shared data dir (default: $MINIFAL_DATA_DIR, /data, ./.minifal/data)"
    )
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
