"""``python -m minifal.runner APP --port P``: the process a fleet starts for each runner."""

from __future__ import annotations

import argparse
import sys

from minifal.runner.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minifal.runner")
    parser.add_argument("app", help="path/to/app.py or path/to/app.py::ClassName")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--unix-socket", help="listen on this unix socket as well as the port")
    parser.add_argument(
        "--fleet", action="store_true", help="behind a gateway: keep-alive for it, no access log"
    )
    args = parser.parse_args(argv)
    return serve(
        args.app,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        unix_socket=args.unix_socket,
        behind_gateway=args.fleet,
    )


if __name__ == "__main__":
    sys.exit(main())
