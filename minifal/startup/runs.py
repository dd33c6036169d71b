"""A run's startup events, parsed: one ``RunnerStart`` per runner process, in display order.

Every runner appends its phases to ``DATA_DIR/runs/<run-id>/<runner-id>.jsonl`` (see
:mod:`minifal.startup.events`). A runner that restarted has one start per process
(``runner-1``, ``runner-1#2``): each ``process_start`` begins one. A phase's start line is paired
with its end line by ``span``; a start line left without one is an *unfinished* phase: running,
if its process still runs (``startup/progress.py`` decides), else never finished.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minifal.host.processes import still_running
from minifal.runner_contract import LOCAL_NODE
from minifal.startup.events import is_start_line, read_events

RUNS_DIRNAME = "runs"
PROCESS_START = "process_start"


class RunNotFoundError(LookupError):
    """There is no run dir to report on."""


@dataclass(frozen=True)
class StartupEvent:
    """One line of a runner's events file; times are ``time.time()`` seconds."""

    phase: str
    start: float
    end: float
    runner_id: str
    pid: int | None
    details: dict[str, Any]
    span: str | None = None  # pairs a start line with its end line; None in older files
    unfinished: bool = False  # a start line with no end line: ``end`` is its start

    @property
    def instant(self) -> bool:
        return self.end <= self.start and not self.unfinished

    @classmethod
    def parse(cls, raw: object) -> StartupEvent | None:
        """None for anything that is not a runner's event (a gateway line, a foreign object)."""
        if not isinstance(raw, dict):
            return None
        phase, start, runner_id = raw.get("phase"), raw.get("start"), raw.get("runner_id")
        if not (isinstance(phase, str) and isinstance(runner_id, str) and is_number(start)):
            return None
        unfinished = is_start_line(raw)
        end = raw["end"] if is_number(raw.get("end")) and not unfinished else start
        pid, details, span = raw.get("pid"), raw.get("details"), raw.get("span")
        return cls(
            phase=phase,
            start=float(start),
            end=max(float(end), float(start)),
            runner_id=runner_id,
            pid=pid if isinstance(pid, int) else None,
            details=details if isinstance(details, dict) else {},
            span=span if isinstance(span, str) else None,
            unfinished=unfinished,
        )


@dataclass(frozen=True)
class RunnerStart:
    """One process of one runner, from its ``process_start`` to its last event."""

    runner_id: str
    number: int  # 1 for the first process of this runner id, 2 after its first restart...
    origin: float  # when the process started: zero of this start's phases
    pid: int | None
    events: tuple[StartupEvent, ...]  # finished phases and instants
    unfinished: tuple[StartupEvent, ...] = ()  # phases started and not ended (yet)

    @property
    def last_written(self) -> float:
        """The latest time its events tell of: a process that died died after it."""
        return max(event.end for event in (*self.events, *self.unfinished))

    @property
    def label(self) -> str:
        return self.runner_id if self.number == 1 else f"{self.runner_id}#{self.number}"

    @property
    def node(self) -> str | None:
        """The machine it ran on (``local``, a Ray node id), as its ``process_start`` says."""
        first = self.events[0] if self.events else None
        if first is None or first.phase != PROCESS_START:
            return None
        node = first.details.get("node")
        return node if isinstance(node, str) else None

    @property
    def revision(self) -> str | None:
        """The revision of the app it served (``minifal deploy``), as its ``process_start``
        says; None when not recorded."""
        first = self.events[0] if self.events else None
        if first is None or first.phase != PROCESS_START:
            return None
        revision = first.details.get("revision")
        return revision if isinstance(revision, str) else None


@dataclass(frozen=True)
class Run:
    run_id: str
    path: Path
    starts: tuple[RunnerStart, ...]  # in display order: by runner id, then start number

    @property
    def origin(self) -> float:
        """The earliest process start: zero of the timeline."""
        return min((start.origin for start in self.starts), default=0.0)


def find_run_dir(data_dir: Path, run_id: str | None = None) -> Path:
    """``runs/<run_id>``, or the run written to last."""
    runs = data_dir / RUNS_DIRNAME
    if run_id is not None:
        path = runs / run_id
        if not path.is_dir():
            raise RunNotFoundError(f"no run {run_id!r} under {runs}")
        return path
    candidates = [path for path in runs.iterdir() if path.is_dir()] if runs.is_dir() else []
    if not candidates:
        raise RunNotFoundError(f"no runs under {runs}")
    return max(candidates, key=_last_written)


def _last_written(run_dir: Path) -> float:
    # Appending to a file leaves its directory's mtime alone: look at the files too.
    files = [path.stat().st_mtime for path in run_dir.glob("*.jsonl")]
    return max([run_dir.stat().st_mtime, *files])


def load_run(data_dir: Path, run_id: str | None = None) -> Run:
    """Read every runner's events of one run; files without runner events are ignored."""
    return read_run(find_run_dir(data_dir, run_id))


def read_run(path: Path) -> Run:
    """The run whose events are in the run dir ``path``."""
    processes: list[list[StartupEvent]] = []
    for file in sorted(path.glob("*.jsonl")):
        raws = read_events(file, starts=True)
        events = [event for raw in raws if (event := StartupEvent.parse(raw))]
        processes.extend(_split_by_process(paired(events)))

    by_runner: dict[str, list[list[StartupEvent]]] = {}
    for events in processes:
        by_runner.setdefault(events[0].runner_id, []).append(events)
    starts = []
    for runner_id in sorted(by_runner, key=_natural_key):
        ordered = sorted(by_runner[runner_id], key=_process_origin)
        for number, events in enumerate(ordered, start=1):
            starts.append(
                RunnerStart(
                    runner_id,
                    number,
                    _process_origin(events),
                    events[0].pid,
                    tuple(event for event in events if not event.unfinished),
                    tuple(event for event in events if event.unfinished),
                )
            )
    return Run(run_id=path.name, path=path, starts=tuple(starts))


def recent_runs(runs_dir: Path, limit: int, but: str | None = None) -> list[Run]:
    """The ``limit`` runs under ``runs_dir`` written to last (a run dir's own mtime: its files
    were created then), newest first, but the run ``but``: bounded work, whatever the history."""
    try:
        dirs = [
            (entry.stat().st_mtime, Path(entry.path))
            for entry in os.scandir(runs_dir)
            if entry.is_dir() and entry.name != but
        ]
    except OSError:
        return []
    newest = sorted(dirs, reverse=True)[:limit]
    return [read_run(path) for _, path in newest]


def running_here(start: RunnerStart) -> bool:
    """Whether ``start``'s process still runs on this machine (one on a Ray node: not known
    here, so False; the gateway knows its own runners)."""
    if start.pid is None or start.node not in (None, LOCAL_NODE):
        return False
    return still_running(start.pid, start.origin)


def paired(events: list[StartupEvent]) -> list[StartupEvent]:
    """One file's events with each start line dropped whose end line is there: the same
    ``span``, or (an end line that ``record()`` wrote, without one) the same process, phase and
    start time. What stays of the start lines are the phases not finished when it was read."""
    finished = [event for event in events if not event.unfinished]
    spans = {event.span for event in finished if event.span is not None}
    starts = {(event.pid, event.phase, event.start) for event in finished}
    return [
        event
        for event in events
        if not event.unfinished
        or (event.span not in spans and (event.pid, event.phase, event.start) not in starts)
    ]


def _split_by_process(events: list[StartupEvent]) -> list[list[StartupEvent]]:
    """Cut one file's events into processes: each ``process_start`` begins one.

    A line that an older process writes after a restart (its teardown, say) goes back to the
    process with its runner id and pid.
    """
    processes: list[list[StartupEvent]] = []
    for event in events:
        owner = None
        if event.phase != PROCESS_START:
            same = (p for p in reversed(processes) if _identity(p[0]) == _identity(event))
            owner = next(same, processes[-1] if processes else None)
        if owner is None:
            owner = []
            processes.append(owner)
        owner.append(event)
    return processes


def _identity(event: StartupEvent) -> tuple[str, int | None]:
    return event.runner_id, event.pid


def _process_origin(events: list[StartupEvent]) -> float:
    if events[0].phase == PROCESS_START:
        return events[0].start
    return min(event.start for event in events)


def _natural_key(text: str) -> list[int | str]:
    """``runner-2`` before ``runner-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
