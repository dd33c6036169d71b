"""What per-request log capture costs, in process, per request and per line: the runner's
request-id middleware with and without tagging (no line written), a printed line and a
``logging`` record inside a request against the same line outside one, and the gateway's work
for one marked line (decode, keep) and for each request (``track``). Lines go to
``/dev/null``, unbuffered as a runner's output is (system calls as to the gateway's pipe).
Each figure is the best of ``--repeat`` timings of ``--number`` calls, in microseconds: a
shared machine's load lengthens some timings, the best is the code's own cost.

    python benchmarks/request_log_capture.py --number 20000 --repeat 7
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import time
import timeit
from collections.abc import Callable

from minifal.fleet.request_logs import RequestLogs
from minifal.runner.log_lines import LogEntry, decode, encode
from minifal.runner.request_id import RequestIdMiddleware
from minifal.runner.request_logs import RequestLines, TaggedFormatter, TaggedStream


def best_us(function: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6


def middleware_us(lines: RequestLines | None, number: int, repeat: int) -> float:
    """One request through ``RequestIdMiddleware`` to an app that answers at once, timed
    inside one running event loop."""

    async def app(scope: object, receive: object, send: Callable) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: object) -> None:
        pass

    middleware = RequestIdMiddleware(app, lines=lines)
    scope = {"type": "http", "headers": [(b"x-fal-request-id", b"0123-req")]}

    async def timed() -> float:
        begin = time.perf_counter()
        for _ in range(number):
            await middleware(scope, receive, send)
        return time.perf_counter() - begin

    return min(asyncio.run(timed()) for _ in range(repeat)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    number, repeat = args.number, args.repeat
    # Unbuffered, as a runner's stdout is (PYTHONUNBUFFERED=1): each write is a system call.
    null = io.TextIOWrapper(open(os.devnull, "wb", buffering=0), write_through=True)  # noqa: SIM115
    lines = RequestLines(null)
    rows: list[tuple[str, float]] = []

    rows.append(("middleware, no tagging", middleware_us(None, number, repeat)))
    rows.append(("middleware, tagging (no line)", middleware_us(lines, number, repeat)))

    stream = TaggedStream(null, "STDOUT", lines)
    rows.append(
        ("print outside a request", best_us(lambda: print("a line", file=stream), number, repeat))
    )
    token = lines.bind("0123-req")
    rows.append(
        ("print inside a request", best_us(lambda: print("a line", file=stream), number, repeat))
    )
    lines.finish("0123-req", token)

    log = logging.getLogger("bench")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = logging.StreamHandler(null)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(TaggedFormatter(formatter, lines))
    log.addHandler(handler)
    rows.append(
        ("log record outside a request", best_us(lambda: log.info("a %s", "line"), number, repeat))
    )
    token = lines.bind("0123-req")
    rows.append(
        ("log record inside a request", best_us(lambda: log.info("a %s", "line"), number, repeat))
    )
    lines.finish("0123-req", token)

    marked = encode(
        LogEntry("0123-req", "a line", "INFO", 1.0, "2026-12-06 01:00:00,000 INFO bench: ")
    )
    store = RequestLogs(max_lines=10**9, max_bytes=1 << 40, max_total_bytes=1 << 40)
    store.track("0123-req")

    def gateway_line() -> None:
        _, entry = decode(marked)
        assert entry is not None
        store.add("runner-0", entry)

    rows.append(("gateway: decode and keep a line", best_us(gateway_line, number, repeat)))
    full = RequestLogs()  # at its 10,000 requests: each new one drops the oldest
    ids = iter(range(10**9))
    for _ in range(full.max_requests):
        full.track(str(next(ids)))
    rows.append(
        ("gateway: track a request", best_us(lambda: full.track(str(next(ids))), number, repeat))
    )
    for name, micros in rows:
        print(f"{name:<34} {micros:8.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
