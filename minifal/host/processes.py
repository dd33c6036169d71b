"""Processes of this machine, as Linux's ``/proc`` tells: when one started, whether it still runs.

A pid alone does not name a process for long (pids are reused); a pid and its start time do.
"""

from __future__ import annotations

import os
from pathlib import Path

SAME_START_TOLERANCE_S = 1.0
"""``/proc`` counts start times in clock ticks from a boot time in whole seconds."""


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (``time.time()`` seconds); None if it is gone or unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        boot_time = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot_time + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def still_running(pid: int, started_at: float) -> bool:
    """Process ``pid`` of this machine, started at ``started_at``, has not exited (a new
    process that got its pid since does not count)."""
    started = process_started_at(pid)
    return started is not None and abs(started - started_at) <= SAME_START_TOLERANCE_S
