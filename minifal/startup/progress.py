"""Phases in progress, and how long the same phase took last time on this data dir.

A runner's unfinished phases (a start line without its end line, ``runs.py``) are *running*
while its process runs; those of a process that exited were never finished. "Last time" is the
latest occurrence of the same work that had finished when this one began: the same phase name
and the same details that say which work it is (``SAME_WORK``: a cache key, a module and a call
signature...), among the runs the caller read (it bounds them: ``runs.recent_runs``).

Pure functions of parsed events and a clock reading: the console's progress line
(``fleet/backends/local.py``), the dashboard's API and ``minifal startup-report`` use them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from minifal.startup.runs import Run, RunnerStart, StartupEvent

SAME_WORK = ("app", "reference", "key", "module", "signature")
"""Details that say which work a phase did: occurrences that agree on them are comparable."""
SAME_WORK_EXTRA = {"compile_cache.compile": ("hit",)}
"""Per phase, more of them: a cache block that compiles is not one that loaded its kernels."""
IMPORTS = "imports"
HISTORY_RUNS = 5
"""Earlier runs of the data dir that "last time" looks at: bounded work, whatever the history."""
FINISHED_SHORTEST_S = 1.0
"""A phase this long or longer gets a line of its own when it ends (the console's)."""

PhaseKey = tuple[str, ...]


def same_work(phase: str, details: Mapping[str, Any]) -> PhaseKey:
    names = SAME_WORK + SAME_WORK_EXTRA.get(phase, ())
    return (phase, *(str(details.get(name, "")) for name in names))


def comparable(event: StartupEvent) -> bool:
    """Whether a finished phase tells how long its work takes: not an instant, not a failure,
    and not a runner's claim of the compile lease (its ``compile_cache.wait`` with ``role:
    compile`` waited for nobody)."""
    if event.instant or event.unfinished or "error" in event.details:
        return False
    return not (event.phase == "compile_cache.wait" and event.details.get("role") == "compile")


class PhaseHistory:
    """When each work finished and how long it took, in the runner starts it was built from."""

    def __init__(self, starts: Iterable[RunnerStart]) -> None:
        runs: dict[PhaseKey, list[tuple[float, float]]] = {}
        for start in starts:
            for event in start.events:
                if comparable(event):
                    key = same_work(event.phase, event.details)
                    runs.setdefault(key, []).append((event.end, event.end - event.start))
        self._runs = {key: sorted(ends) for key, ends in runs.items()}

    def last_s(self, phase: str, details: Mapping[str, Any], before: float) -> float | None:
        """Seconds the same work took the last time it finished before ``before``."""
        ends = self._runs.get(same_work(phase, details), [])
        position = bisect.bisect_left(ends, (before, float("-inf")))
        return ends[position - 1][1] if position else None


@dataclass(frozen=True)
class PhaseInProgress:
    """A phase of a runner start that began and has not ended."""

    runner: str  # the start's label: runner-0, runner-1#2
    phase: str
    start: float  # time.time() seconds
    details: dict[str, Any]
    running: bool  # its process runs: still going; else it never finished
    last_s: float | None  # how long the same work took last time
    stopped_at: float | None = None  # not running: the last time its process wrote an event

    @property
    def title(self) -> str:
        return describe(self.phase, self.details)

    def elapsed_s(self, now: float) -> float:
        """Seconds so far (running), or until its process's last word (not running)."""
        until = now if self.running or self.stopped_at is None else self.stopped_at
        return max(until - self.start, 0.0)


def in_progress(
    start: RunnerStart, running: bool, history: PhaseHistory
) -> tuple[PhaseInProgress, ...]:
    """``start``'s unfinished phases, outermost (earliest) first."""
    return tuple(
        PhaseInProgress(
            runner=start.label,
            phase=event.phase,
            start=event.start,
            details=event.details,
            running=running,
            last_s=history.last_s(event.phase, event.details, event.start),
            stopped_at=None if running else start.last_written,
        )
        for event in sorted(start.unfinished, key=lambda event: event.start)
    )


def run_in_progress(
    run: Run, running: Callable[[RunnerStart], bool], earlier: Callable[[], Iterable[Run]]
) -> dict[str, tuple[PhaseInProgress, ...]]:
    """Each runner start's unfinished phases, by its label (starts with none are left out).

    ``running`` says whether a start's process still runs; a start that a later one of the same
    runner followed does not (a runner id runs one process at a time). ``earlier`` gives the
    runs before this one, for "last time" (called only if some phase is unfinished)."""
    unfinished = [start for start in run.starts if start.unfinished]
    if not unfinished:
        return {}
    history = PhaseHistory([*(start for past in earlier() for start in past.starts), *run.starts])
    latest = {start.runner_id: start for start in run.starts}  # in order: the last one wins
    return {
        start.label: in_progress(
            start, latest[start.runner_id] is start and running(start), history
        )
        for start in unfinished
    }


def describe(phase: str, details: Mapping[str, Any]) -> str:
    """What a phase does, in words: ``compiling UNet 1x4x64x64 in a worker``."""
    key = details.get("key", "")
    graph = f"{details.get('module', '?')} {details.get('signature', '?')}"
    match phase:
        case "imports":
            return "importing Python modules"
        case "app_import":
            return "importing the app"
        case "setup":
            return f"setup() of {details['app']}" if "app" in details else "setup()"
        case "compile_cache.load":
            return f"loading compiled cache {key}"
        case "compile_cache.wait":
            return f"waiting for another runner's compile of {key}"
        case "compile_cache.compile":
            return f"warming up {key} (cache hit)" if details.get("hit") else f"compiling {key}"
        case "compile_cache.sync":
            return f"publishing compiled cache {key}"
        case "precompiled":
            return f"precompiled block {key}"
        case "precompiled.compile":
            return f"compiling {graph}" + (" in a worker" if details.get("in_worker") else "")
        case "precompiled.load":
            return f"loading {graph}"
        case _:
            return phase.replace("_", " ")


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def phase_text(title: str, elapsed_s: float, last_s: float | None) -> str:
    """``compiling UNet 1x4x64x64: 45 s, last time 101 s``."""
    last = "" if last_s is None else f", last time {seconds(last_s)}"
    return f"{title}: {seconds(elapsed_s)}{last}"


def progress_line(phases: Iterable[PhaseInProgress], now: float) -> str:
    """The phases running now, innermost (latest) first: ``compiling sd-turbo/v1: 45 s, last
    time 101 s; setup() of SDTurbo: 48 s, last time 104 s``; empty if none runs."""
    running = sorted((p for p in phases if p.running), key=lambda p: p.start, reverse=True)
    return "; ".join(phase_text(p.title, p.elapsed_s(now), p.last_s) for p in running)


def finished_since(
    events: Iterable[StartupEvent], since: float, shortest_s: float
) -> list[StartupEvent]:
    """Phases that ended after ``since`` and took at least ``shortest_s``, in the order they
    ended: what a progress line reports as done."""
    done = [
        event
        for event in events
        if not event.instant and event.end > since and event.end - event.start >= shortest_s
    ]
    return sorted(done, key=lambda event: event.end)


def finished_text(event: StartupEvent, history: PhaseHistory) -> str:
    """``done compiling sd-turbo/v1: 98 s, last time 101 s`` (or its error)."""
    title, took = describe(event.phase, event.details), event.end - event.start
    error = event.details.get("error")
    if error:
        return f"failed {title} after {seconds(took)}: {error}"
    return "done " + phase_text(
        title, took, history.last_s(event.phase, event.details, event.start)
    )


def console_lines(
    start: RunnerStart | None, started_at: float, history: PhaseHistory, since: float, now: float
) -> list[str]:
    """What the gateway says about a runner that is starting, every few seconds: the long
    phases it finished since ``since``, then what runs now (``start`` is its process's events;
    None before it wrote any: it is importing Python modules)."""
    if start is None:
        last = history.last_s(IMPORTS, {}, started_at)
        phases: tuple[PhaseInProgress, ...] = (
            PhaseInProgress("", IMPORTS, started_at, {}, running=True, last_s=last),
        )
        done = []
    else:
        phases = in_progress(start, True, history)
        finished = finished_since(start.events, since, FINISHED_SHORTEST_S)
        done = [finished_text(event, history) for event in finished]
    now_text = progress_line(phases, now) or _between_phases(start)
    return [*done, f"starting: {seconds(now - started_at)}; {now_text}"]


def background_lines(
    start: RunnerStart | None, history: PhaseHistory, since: float, now: float
) -> list[str] | None:
    """What the gateway says about a runner that serves while phases of its start still run
    (serving while compiling: each signature's compile after ready): the long phases it
    finished since ``since``, then what still runs; ``None`` once nothing runs any more."""
    if start is None:
        return None
    finished = finished_since(start.events, since, FINISHED_SHORTEST_S)
    done = [finished_text(event, history) for event in finished]
    running = progress_line(in_progress(start, True, history), now)
    if not running:
        return done or None
    return [*done, f"serving; in the background: {running}"]


def _between_phases(start: RunnerStart | None) -> str:
    last = max(start.events, key=lambda event: event.end) if start and start.events else None
    if last is None:
        return "no phase yet"
    error = last.details.get("error")
    if error:
        return f"{describe(last.phase, last.details)} failed: {error}"
    return f"last done: {describe(last.phase, last.details)}"
