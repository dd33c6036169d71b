"""Synthetic startup events for the report and progress tests: the JSON lines a runner writes
(``minifal/startup/events.py``), at times counted from ``T0``."""

from __future__ import annotations

from typing import Any

T0 = 1_750_000_000.0


def ended_event(
    runner: str, pid: int, phase: str, start: float, end: float | None = None, **details: Any
) -> dict[str, Any]:
    """The line of a phase that ended (an instant one when ``end`` is not given)."""
    end = start if end is None else end
    return {
        "phase": phase,
        "start": T0 + start,
        "end": T0 + end,
        "duration_s": round(end - start, 6),
        "runner_id": runner,
        "pid": pid,
        "details": details,
    }
