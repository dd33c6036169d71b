"""Startup timings of one runner, written as JSON lines for the CLI and the gateway to read.

A runner process exports ``MINIFAL_EVENTS_FILE``; every phase of its start (imports, app import,
``setup()``, compiled-cache load / compile / sync, ready, first request) appends one line::

    {"phase": "setup", "start": 1732650000.1, "end": 1732650012.4, "duration_s": 12.3,
     "runner_id": "runner-0", "pid": 1234, "details": {...}, "span": "1234.7"}

Instant events (``ready``) have ``start == end``. A phase timed by :func:`phase` (or opened by
:func:`begin`) also writes a start line when it begins, so that readers can tell what is running
now; its end line carries the same ``span`` id::

    {"kind": "start", "phase": "setup", "start": 1732650000.1, "runner_id": "runner-0",
     "pid": 1234, "details": {...}, "span": "1234.7"}

Older files have no start lines and no ``span``: every line is a finished phase. A start line
without its end line is a phase in progress, or one its process never finished (it died);
``runs.py`` pairs them. A phase that :func:`record` writes when it ends can still announce its
start: ``begin(name, start, ...)`` with the start time its ``record(name, start, ...)`` will
give pairs by process, phase and start time. Writing never raises into the caller: losing a
timing line must not stop an app from starting.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minifal.host import envs
from minifal.host.processes import process_started_at

logger = logging.getLogger("minifal.startup")

START_KIND = "start"
"""``kind`` of a start line; a line without ``kind`` is a finished phase (or an instant)."""
_span_numbers = itertools.count(1)


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
    _append(path, event)
    return event


@dataclass(frozen=True)
class OpenSpan:
    """A phase whose start line is written: :func:`finish` writes its end line."""

    phase: str
    start: float
    span: str | None  # None: no start line was written


def begin(phase: str, start: float | None = None, /, **details: Any) -> OpenSpan:
    """Write the start line of ``phase`` (this process's), for readers to see it running.

    ``details`` are those known when it starts; the ones that say which work it is (a cache
    key, a module and a call signature) belong here, so that the same work can be matched with
    its earlier runs (``startup/progress.py``)."""
    start = time.time() if start is None else start
    span = f"{os.getpid()}.{next(_span_numbers)}"
    line = {
        "kind": START_KIND,
        "phase": phase,
        "start": start,
        "runner_id": envs.RUNNER_ID.get(),
        "pid": os.getpid(),
        "details": details,
        "span": span,
    }
    _append(events_file(), line)
    return OpenSpan(phase, start, span)


def finish(opened: OpenSpan, end: float | None = None, /, **details: Any) -> dict[str, Any]:
    """Write the end line of a phase :func:`begin` opened: the event, as :func:`record` does."""
    end = time.time() if end is None else end
    event = {
        "phase": opened.phase,
        "start": opened.start,
        "end": end,
        "duration_s": round(end - opened.start, 6),
        "runner_id": envs.RUNNER_ID.get(),
        "pid": os.getpid(),
        "details": details,
        "span": opened.span,
    }
    _append(events_file(), event)
    return event


def _append(path: Path | None, line: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(line, default=str) + "\n"
        # One write() on an O_APPEND fd: lines from threads of one process never interleave.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        logger.warning("could not record startup event %s: %s", line.get("phase"), exc)


@contextmanager
def phase(name: str, **details: Any) -> Iterator[dict[str, Any]]:
    """Time a block; the yielded dict collects details (bytes, hit/miss...) recorded at its end.

    Its start line (with ``details`` as given) is written on entry, its end line on exit. An
    exception in the block is recorded as ``error`` and re-raised unchanged.
    """
    opened = begin(name, **details)
    collected: dict[str, Any] = dict(details)
    try:
        yield collected
    except BaseException as exc:
        collected.setdefault("error", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        finish(opened, time.time(), **collected)


def is_start_line(raw: object) -> bool:
    """A phase's start line (see the module's docstring), not a finished phase."""
    return isinstance(raw, dict) and raw.get("kind") == START_KIND


def read_events(path: Path, pid: int | None = None, starts: bool = False) -> list[dict[str, Any]]:
    """Events of one file, skipping a torn last line (a runner killed mid-write); with ``pid``,
    only that process's (a runner's file holds every start of it: its latest is its pid's).

    Finished phases and instants only, unless ``starts``: then the start lines too, in order.
    """
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
        if not starts and is_start_line(event):
            continue
        if pid is None or (isinstance(event, dict) and event.get("pid") == pid):
            events.append(event)
    return events


def process_start_time() -> float:
    """When this process started (Linux ``/proc``), else now: the origin of a runner's timeline."""
    started = process_started_at(os.getpid())
    return time.time() if started is None else started
