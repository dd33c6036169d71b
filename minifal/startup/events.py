"""Startup timings of one runner, written as JSON lines for the CLI and the gateway to read.

A runner process exports ``MINIFAL_EVENTS_FILE``; every phase of its start (imports, app import,
``setup()``, compiled-cache load / compile / sync, ready, first request) appends one line::

    {"phase": "setup", "start": 1732650000.1, "end": 1732650012.4, "duration_s": 12.3,
     "runner_id": "runner-0", "pid": 1234, "details": {...}}

Instant events (``ready``) have ``start == end``. Writing never raises into the caller: losing a
timing line must not stop an app from starting.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from minifal.host import envs

logger = logging.getLogger("minifal.startup")


def runner_events_file(run_dir: Path, runner_id: str) -> Path:
    """``DATA_DIR/runs/<run-id>/<runner-id>.jsonl``: one file per runner, every start of it."""
    return run_dir / f"{runner_id}.jsonl"


def events_file() -> Path | None:
    return envs.EVENTS_FILE.get()


def record(phase: str, start: float, end: float | None = None, **details: Any) -> dict[str, Any]:
    """Append one event of this process; ``start``/``end`` are ``time.time()`` seconds."""
    runner_id = envs.RUNNER_ID.get()
    return record_for(events_file(), runner_id, os.getpid(), phase, start, end, **details)


def record_for(
    path: Path | None,
    runner_id: str,
    pid: int | None,
    phase: str,
    start: float,
    end: float | None = None,
    /,
    **details: Any,
) -> dict[str, Any]:
    """Append one event of runner ``runner_id``'s process ``pid`` to ``path`` (the gateway
    records what it does to a runner, a suspend say, in that runner's own file)."""
    end = start if end is None else end
    event = {
        "phase": phase,
        "start": start,
        "end": end,
        "duration_s": round(end - start, 6),
        "runner_id": runner_id,
        "pid": pid,
        "details": details,
    }
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps(event, default=str) + "\n"
            # One write() on an O_APPEND fd: lines from threads of one process never interleave.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("could not record startup event %s: %s", phase, exc)
    return event


@contextmanager
def phase(name: str, **details: Any) -> Iterator[dict[str, Any]]:
    """Time a block; the yielded dict collects details (bytes, hit/miss...) recorded at its end.

    An exception in the block is recorded as ``error`` and re-raised unchanged.
    """
    start = time.time()
    collected: dict[str, Any] = dict(details)
    try:
        yield collected
    except BaseException as exc:
        collected.setdefault("error", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record(name, start, time.time(), **collected)


def read_events(path: Path, pid: int | None = None) -> list[dict[str, Any]]:
    """Events of one file, skipping a torn last line (a runner killed mid-write); with ``pid``,
    only that process's (a runner's file holds every start of it: its latest is its pid's)."""
    events = []
    try:
        text = path.read_text()
    except OSError:
        return events
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if pid is None or event.get("pid") == pid:
            events.append(event)
    return events


def process_start_time() -> float:
    """When this process started (Linux ``/proc``), else now: the origin of a runner's timeline."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        boot_time = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot_time + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
