"""A run's startup as rows: one per runner start, one column per phase, and as JSON (the text
``minifal startup-report`` prints is ``report_text.py``).

Phases this module does not know are shown like the others; ``compile_cache.*`` is read for the
cache column, ``precompiled.*`` for the list of compiled graphs (one per module and input
signature: loaded or compiled, how long) and both for each runner's Dynamo seconds (zero on a
warm precompiled runner). A runner that served while compiling has its ``precompiled.switch``
events listed apart: when each signature went from eager to compiled code, after ``ready``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from minifal.startup.progress import PhaseInProgress
from minifal.startup.runs import PROCESS_START, Run, RunnerStart, StartupEvent, is_number

READY = "ready"
CACHE_PREFIX = "compile_cache."
PRECOMPILED = "precompiled"
GRAPH_PHASES = {"precompiled.load": "loaded", "precompiled.compile": "compiled"}
SWITCH = "precompiled.switch"
# A runner's lifecycle, in order: the order of the table's columns and of the legend.
KNOWN_ORDER = (
    PROCESS_START,
    "imports",
    "app_import",
    "setup",
    "compile_cache.load",
    "compile_cache.wait",
    "compile_cache.compile",
    "compile_cache.sync",
    PRECOMPILED,
    "precompiled.load",
    "precompiled.compile",
    READY,
    "startup_timeout",
    "first_request",
    "teardown",
)
# Not table columns: the process start is each row's zero, and "ready at" shows ready.
COVERED_BY_OTHER_COLUMNS = frozenset({PROCESS_START, READY, SWITCH})


@dataclass(frozen=True)
class PhaseTiming:
    """A phase of one runner start; a phase recorded more than once (one load per key) adds up."""

    start_s: float  # first occurrence, seconds after the process start
    end_s: float
    duration_s: float
    count: int
    instant: bool
    details: tuple[dict[str, Any], ...]

    @property
    def value_s(self) -> float:
        """What the table shows: when an instant happened, or how long a span took."""
        return self.start_s if self.instant else self.duration_s


@dataclass(frozen=True)
class CompiledGraph:
    """One precompiled graph of a runner start: a module's artifact for one input signature."""

    module: str
    signature: str
    how: str  # "loaded", "compiled" or "failed"
    seconds: float
    dynamo_s: float  # Dynamo's share (capture); 0 for a loaded graph


@dataclass(frozen=True)
class Switch:
    """A call signature served eagerly from ``ready`` on, until its artifact took over."""

    module: str
    signature: str
    at_s: float  # when it switched (or gave up), seconds after the process start
    switched: bool
    source: str  # "compiled" here, or "loaded" from another runner's publish
    reason: str | None  # why it stayed eager


@dataclass(frozen=True)
class RunnerRow:
    label: str
    runner_id: str
    number: int
    pid: int | None
    started_at_s: float  # this process start, seconds after the run's first one
    ready_at_s: float | None
    cache: str
    phases: dict[str, PhaseTiming]
    graphs: tuple[CompiledGraph, ...] = ()
    dynamo_s: float | None = None  # Dynamo seconds of this start (compiled caches); None: none
    node: str | None = None  # where it ran: "local" or a Ray node id; None: not recorded
    revision: str | None = None  # the app revision it served; None: not recorded
    in_progress: tuple[PhaseInProgress, ...] = ()  # begun, not ended: running or never will
    origin: float = 0.0  # its process start (time.time() seconds): zero of its phases
    switches: tuple[Switch, ...] = ()


# --- rows ----------------------------------------------------------------------------------------


def report_rows(
    run: Run, in_progress: Mapping[str, tuple[PhaseInProgress, ...]] | None = None
) -> list[RunnerRow]:
    """One row per runner start; ``in_progress`` (``progress.run_in_progress``): its phases
    begun and not ended, by label."""
    found = in_progress or {}
    return [_row(start, run.origin, found.get(start.label, ())) for start in run.starts]


def _row(
    start: RunnerStart, run_origin: float, in_progress: tuple[PhaseInProgress, ...]
) -> RunnerRow:
    grouped: dict[str, list[StartupEvent]] = {}
    for event in start.events:
        grouped.setdefault(event.phase, []).append(event)
    phases = {
        name: PhaseTiming(
            start_s=min(event.start for event in events) - start.origin,
            end_s=max(event.end for event in events) - start.origin,
            duration_s=sum(event.end - event.start for event in events),
            count=len(events),
            instant=all(event.instant for event in events),
            details=tuple(event.details for event in events),
        )
        for name, events in grouped.items()
    }
    ready = phases.get(READY)
    return RunnerRow(
        label=start.label,
        runner_id=start.runner_id,
        number=start.number,
        pid=start.pid,
        started_at_s=start.origin - run_origin,
        ready_at_s=ready.start_s if ready else None,
        cache=cache_status(start.events),
        phases=phases,
        graphs=compiled_graphs(start.events),
        dynamo_s=dynamo_seconds(start.events),
        node=start.node,
        revision=start.revision,
        in_progress=in_progress,
        origin=start.origin,
        switches=tuple(
            Switch(
                module=str(event.details.get("module", "?")),
                signature=str(event.details.get("signature", "?")),
                at_s=event.end - start.origin,
                switched=bool(event.details.get("switched")),
                source=str(event.details.get("source", "compiled")),
                reason=event.details.get("reason"),
            )
            for event in sorted(start.events, key=lambda e: e.end)
            if event.phase == SWITCH
        ),
    )


def compiled_graphs(events: Iterable[StartupEvent]) -> tuple[CompiledGraph, ...]:
    """The precompiled graphs of one start, in the order they were loaded or compiled."""
    graphs = []
    for event in sorted(events, key=lambda e: e.start):
        how = GRAPH_PHASES.get(event.phase)
        if how is None:
            continue
        if "error" in event.details:  # a compile that ended without an artifact
            how = "failed"
        dynamo = event.details.get("dynamo_s", 0.0)
        graphs.append(
            CompiledGraph(
                module=str(event.details.get("module", "?")),
                signature=str(event.details.get("signature", "?")),
                how=how,
                seconds=event.end - event.start,
                dynamo_s=float(dynamo) if is_number(dynamo) else 0.0,
            )
        )
    return tuple(graphs)


def dynamo_seconds(events: Iterable[StartupEvent]) -> float | None:
    """Dynamo's seconds during the compiled-cache blocks of one start, by torch's own timers.

    A precompiled block records them for its whole span; otherwise each
    ``synchronized_inductor_cache`` block's ``compile_cache.compile`` does.
    """
    events = list(events)
    for phase in (PRECOMPILED, CACHE_PREFIX + "compile"):
        values = [e.details.get("dynamo_s") for e in events if e.phase == phase]
        numbers = [float(v) for v in values if is_number(v)]
        if numbers:
            return sum(numbers)
    return None


def cache_status(events: Iterable[StartupEvent]) -> str:
    """``hit``, ``waited+hit``, ``miss (compiled)``, ``miss`` or ``-``, from ``compile_cache.*``.

    With several cache keys (one per compiled module) each key gets its word; different words are
    joined. Events without a key (a wait for any artifact, say) count for every key.
    """
    cache_events = [event for event in events if event.phase.startswith(CACHE_PREFIX)]
    keys = list(dict.fromkeys(e.details["key"] for e in cache_events if "key" in e.details))
    groups = [[e for e in cache_events if e.details.get("key", key) == key] for key in keys] or [
        cache_events
    ]
    words = dict.fromkeys(_cache_word(group) for group in groups if group)
    return ", ".join(words) or "-"


def _cache_word(events: list[StartupEvent]) -> str:
    """The body of the cache context is ``compile_cache.compile``: its ``hit`` says whether the
    kernels came from the cache. A ``wait`` counts only when another runner held the compile
    (the holder's own wait has ``role: compile``)."""
    by_step = {event.phase.removeprefix(CACHE_PREFIX): event for event in events}
    wait, compile_ = by_step.get("wait"), by_step.get("compile")
    waited = "waited+" if wait is not None and wait.details.get("role") != "compile" else ""
    if compile_ is not None:
        return f"{waited}hit" if compile_.details.get("hit") is True else f"{waited}miss (compiled)"
    hit = any(event.details.get("hit") is True for event in events)
    return f"{waited}hit" if hit else f"{waited}miss"


def phase_names(rows: list[RunnerRow]) -> list[str]:
    """Every phase of any row: known phases in their lifecycle order, each other phase after the
    last known phase that had started when it started.

    Sorting everything by start time would not do: a restarted runner that hits the cache is
    ``ready`` before the first runner's compile even began.
    """
    order: dict[str, tuple[float, float]] = {}
    for row in rows:
        known = {name: timing for name, timing in row.phases.items() if name in KNOWN_ORDER}
        for name, timing in row.phases.items():
            if name in known:
                key = (float(KNOWN_ORDER.index(name)), 0.0)
            else:
                started = [
                    KNOWN_ORDER.index(k) for k, t in known.items() if t.start_s <= timing.start_s
                ]
                key = (max(started, default=-1) + 0.5, timing.start_s)
            order[name] = min(key, order.get(name, key))
    return sorted(order, key=lambda name: (order[name], name))


# --- text and JSON -------------------------------------------------------------------------------


def instant_phases(rows: list[RunnerRow]) -> set[str]:
    """Phases that are an instant in every row that has them (``ready``, ``startup_timeout``)."""
    instants: dict[str, bool] = {}
    for row in rows:
        for name, timing in row.phases.items():
            instants[name] = instants.get(name, True) and timing.instant
    return {name for name, instant in instants.items() if instant}


def report_json(run: Run, rows: list[RunnerRow], now: float | None = None) -> dict[str, Any]:
    """The report as data; seconds are relative to each runner's process start. A phase in
    progress ends ``now`` (running) or at its process's last event (never finished)."""
    return {
        "run_id": run.run_id,
        "path": str(run.path),
        "origin": run.origin,
        "phases": phase_names(rows),
        "runners": [
            {
                "runner": row.label,
                "runner_id": row.runner_id,
                "start_number": row.number,
                "pid": row.pid,
                "node": row.node,
                "revision": row.revision,
                "started_at_s": round(row.started_at_s, 6),
                "ready_at_s": None if row.ready_at_s is None else round(row.ready_at_s, 6),
                "cache": row.cache,
                "dynamo_s": row.dynamo_s,
                "graphs": [asdict(graph) for graph in row.graphs],
                "switches": [asdict(switch) for switch in row.switches],
                "phases": {
                    name: {
                        "start_s": round(timing.start_s, 6),
                        "end_s": round(timing.end_s, 6),
                        "duration_s": round(timing.duration_s, 6),
                        "count": timing.count,
                        "instant": timing.instant,
                        "details": list(timing.details),
                    }
                    for name, timing in row.phases.items()
                },
                "in_progress": [
                    _in_progress_json(phase, row.origin, now) for phase in row.in_progress
                ],
            }
            for row in rows
        ],
    }


def _in_progress_json(phase: PhaseInProgress, origin: float, now: float | None) -> dict[str, Any]:
    start_s = phase.start - origin
    elapsed = phase.elapsed_s(phase.start if now is None else now)
    return {
        "phase": phase.phase,
        "title": phase.title,
        "start_s": round(start_s, 6),
        "end_s": round(start_s + elapsed, 6),
        "running": phase.running,
        "last_s": None if phase.last_s is None else round(phase.last_s, 6),
        "details": phase.details,
    }
