"""``minifal startup-report``: the startup phases of a run's runners, side by side.

Every runner appends its phases to ``DATA_DIR/runs/<run-id>/<runner-id>.jsonl`` (see
:mod:`minifal.startup_events`). This module reads one run back and shows it three ways: a text
table (one row per runner start, one column per phase), JSON, and a PNG timeline drawn with Pillow.

A runner that restarted has one row per start (``runner-1``, ``runner-1#2``). Phases this module
does not know are shown like the others; ``compile_cache.*`` is read for the cache column,
``precompiled.*`` for the list of compiled graphs (one per module and input signature: loaded or
compiled, how long) and both for each runner's Dynamo seconds (zero on a warm precompiled runner).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from minifal.data_dir import resolve_data_dir
from minifal.startup_events import read_events

RUNS_DIRNAME = "runs"
TIMELINE_FILENAME = "startup.png"
PROCESS_START = "process_start"
READY = "ready"
CACHE_PREFIX = "compile_cache."
PRECOMPILED = "precompiled"
GRAPH_PHASES = {"precompiled.load": "loaded", "precompiled.compile": "compiled"}
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
COVERED_BY_OTHER_COLUMNS = frozenset({PROCESS_START, READY})


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

    @property
    def instant(self) -> bool:
        return self.end <= self.start

    @classmethod
    def parse(cls, raw: object) -> StartupEvent | None:
        """None for anything that is not a runner's event (a gateway line, a foreign object)."""
        if not isinstance(raw, dict):
            return None
        phase, start, runner_id = raw.get("phase"), raw.get("start"), raw.get("runner_id")
        if not (isinstance(phase, str) and isinstance(runner_id, str) and _is_number(start)):
            return None
        end = raw["end"] if _is_number(raw.get("end")) else start
        pid, details = raw.get("pid"), raw.get("details")
        return cls(
            phase=phase,
            start=float(start),
            end=max(float(end), float(start)),
            runner_id=runner_id,
            pid=pid if isinstance(pid, int) else None,
            details=details if isinstance(details, dict) else {},
        )


@dataclass(frozen=True)
class RunnerStart:
    """One process of one runner, from its ``process_start`` to its last event."""

    runner_id: str
    number: int  # 1 for the first process of this runner id, 2 after its first restart...
    origin: float  # when the process started: zero of this start's phases
    pid: int | None
    events: tuple[StartupEvent, ...]

    @property
    def label(self) -> str:
        return self.runner_id if self.number == 1 else f"{self.runner_id}#{self.number}"


@dataclass(frozen=True)
class Run:
    run_id: str
    path: Path
    starts: tuple[RunnerStart, ...]  # in display order: by runner id, then start number

    @property
    def origin(self) -> float:
        """The earliest process start: zero of the timeline."""
        return min((start.origin for start in self.starts), default=0.0)


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
    how: str  # "loaded" or "compiled"
    seconds: float
    dynamo_s: float  # Dynamo's share (capture); 0 for a loaded graph


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


# --- loading -------------------------------------------------------------------------------------


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
    path = find_run_dir(data_dir, run_id)
    processes: list[list[StartupEvent]] = []
    for file in sorted(path.glob("*.jsonl")):
        events = [event for raw in read_events(file) if (event := StartupEvent.parse(raw))]
        processes.extend(_split_by_process(events))

    by_runner: dict[str, list[list[StartupEvent]]] = {}
    for events in processes:
        by_runner.setdefault(events[0].runner_id, []).append(events)
    starts = []
    for runner_id in sorted(by_runner, key=_natural_key):
        ordered = sorted(by_runner[runner_id], key=_process_origin)
        for number, events in enumerate(ordered, start=1):
            starts.append(
                RunnerStart(
                    runner_id, number, _process_origin(events), events[0].pid, tuple(events)
                )
            )
    return Run(run_id=path.name, path=path, starts=tuple(starts))


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


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- rows ----------------------------------------------------------------------------------------


def report_rows(run: Run) -> list[RunnerRow]:
    return [_row(start, run.origin) for start in run.starts]


def _row(start: RunnerStart, run_origin: float) -> RunnerRow:
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
    )


def compiled_graphs(events: Iterable[StartupEvent]) -> tuple[CompiledGraph, ...]:
    """The precompiled graphs of one start, in the order they were loaded or compiled."""
    graphs = []
    for event in sorted(events, key=lambda e: e.start):
        how = GRAPH_PHASES.get(event.phase)
        if how is None:
            continue
        dynamo = event.details.get("dynamo_s", 0.0)
        graphs.append(
            CompiledGraph(
                module=str(event.details.get("module", "?")),
                signature=str(event.details.get("signature", "?")),
                how=how,
                seconds=event.end - event.start,
                dynamo_s=float(dynamo) if _is_number(dynamo) else 0.0,
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
        numbers = [float(v) for v in values if _is_number(v)]
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


def format_table(rows: list[RunnerRow]) -> str:
    """Plain aligned columns; a phase's duration, or for an instant (``@name``) when it happened."""
    phases = [name for name in phase_names(rows) if name not in COVERED_BY_OTHER_COLUMNS]
    instants = instant_phases(rows)
    header = [
        "runner",
        "pid",
        "started",
        *(f"@{name}" if name in instants else name for name in phases),
        "cache",
        "ready at",
    ]
    lines = [header]
    for row in rows:
        cells = [
            _seconds(row.phases[name].value_s) if name in row.phases else "-" for name in phases
        ]
        lines.append(
            [
                row.label,
                "-" if row.pid is None else str(row.pid),
                f"+{row.started_at_s:.2f}",
                *cells,
                row.cache,
                "-" if row.ready_at_s is None else _seconds(row.ready_at_s),
            ]
        )
    text_columns = {0, len(header) - 2}  # runner and cache read left to right; numbers align right
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(widths[i]) if i in text_columns else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in lines
    )


def format_graphs(rows: list[RunnerRow]) -> str:
    """Each runner's Dynamo seconds and precompiled graphs: loaded or compiled, how long."""
    lines = []
    dynamo = [f"{row.label} {row.dynamo_s:.2f} s" for row in rows if row.dynamo_s is not None]
    if dynamo:
        lines.append("Dynamo (tracing + guards, torch's timers): " + ", ".join(dynamo))
    graph_rows = [(row.label, graph) for row in rows for graph in row.graphs]
    if graph_rows:
        lines.append("precompiled graphs:")
        width = max(len(label) for label, _ in graph_rows)
        for label, graph in graph_rows:
            dynamo_part = f" (Dynamo {graph.dynamo_s:.2f} s)" if graph.how == "compiled" else ""
            lines.append(
                f"  {label.ljust(width)}  {graph.how:8} {graph.seconds:7.2f} s{dynamo_part}  "
                f"{graph.module} {graph.signature}"
            )
    return "\n".join(lines)


def instant_phases(rows: list[RunnerRow]) -> set[str]:
    """Phases that are an instant in every row that has them (``ready``, ``startup_timeout``)."""
    instants: dict[str, bool] = {}
    for row in rows:
        for name, timing in row.phases.items():
            instants[name] = instants.get(name, True) and timing.instant
    return {name for name, instant in instants.items() if instant}


def _seconds(value: float) -> str:
    return f"{value:.2f}"


def report_json(run: Run, rows: list[RunnerRow]) -> dict[str, Any]:
    """The report as data; seconds are relative to each runner's process start."""
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
                "started_at_s": round(row.started_at_s, 6),
                "ready_at_s": None if row.ready_at_s is None else round(row.ready_at_s, 6),
                "cache": row.cache,
                "dynamo_s": row.dynamo_s,
                "graphs": [asdict(graph) for graph in row.graphs],
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
            }
            for row in rows
        ],
    }


# --- PNG timeline --------------------------------------------------------------------------------

Colour = tuple[int, int, int]

WIDTH = 1400
MARGIN = 24
LABEL_WIDTH = 270
HEADER_HEIGHT = 52
LEGEND_LINE_HEIGHT = 22
AXIS_HEIGHT = 50
BAR_HEIGHT = 22
BAR_GAP = 4
LANE_PADDING = 10
MIN_LANE_LEVELS = 2  # room for the lane's two lines of labels
INSTANT_LABEL_HEIGHT = 16
BACKGROUND: Colour = (255, 255, 255)
INK: Colour = (34, 34, 34)
MUTED: Colour = (110, 110, 110)
GRID: Colour = (228, 228, 228)
LANE: Colour = (244, 244, 246)
PHASE_COLOURS: dict[str, Colour] = {
    "imports": (166, 189, 219),
    "app_import": (116, 169, 207),
    "setup": (253, 208, 162),
    "compile_cache.load": (161, 217, 155),
    "compile_cache.wait": (255, 237, 111),
    "compile_cache.compile": (251, 128, 114),
    "compile_cache.sync": (188, 128, 189),
    PRECOMPILED: (254, 224, 210),
    "precompiled.load": (65, 171, 93),
    "precompiled.compile": (203, 24, 29),
    "first_request": (128, 205, 193),
    "teardown": (189, 189, 189),
    READY: (35, 139, 69),
    "startup_timeout": (203, 24, 29),
}
OTHER_COLOURS: tuple[Colour, ...] = (
    (204, 235, 197),
    (254, 217, 166),
    (222, 203, 228),
    (179, 205, 227),
    (229, 216, 189),
    (253, 218, 236),
)


@dataclass(frozen=True)
class _TimeAxis:
    """Seconds since the run's first process start, mapped onto the plot's pixels."""

    left: int
    right: int
    span_s: float
    step_s: float

    @classmethod
    def fit(cls, left: int, right: int, end_s: float) -> _TimeAxis:
        step = _tick_step(end_s)
        return cls(left, right, max(step * math.ceil(end_s / step), step), step)

    def x(self, seconds: float) -> float:
        return self.left + seconds * (self.right - self.left) / self.span_s

    def ticks(self) -> list[float]:
        return [i * self.step_s for i in range(round(self.span_s / self.step_s) + 1)]


@dataclass(frozen=True)
class _Lane:
    start: RunnerStart
    row: RunnerRow
    spans: list[tuple[StartupEvent, int]]  # each span with its level (0 = outermost)

    @property
    def height(self) -> int:
        levels = max(max((level for _, level in self.spans), default=0) + 1, MIN_LANE_LEVELS)
        return 2 * LANE_PADDING + levels * (BAR_HEIGHT + BAR_GAP) + INSTANT_LABEL_HEIGHT


def render_timeline_png(run: Run, path: Path) -> Path:
    """One lane per runner start on a shared axis: seconds since the run's first process start.

    Spans are bars (a span inside another, like a cache load inside ``setup()``, goes one level
    down); instants are vertical marks labelled under the bars.
    """
    from PIL import Image, ImageDraw, ImageFont

    rows = report_rows(run)
    names = [name for name in phase_names(rows) if name != PROCESS_START]
    colours = _phase_colours(names)
    font, big = ImageFont.load_default(size=13), ImageFont.load_default(size=18)
    lanes = [
        _Lane(start, row, _span_levels(start)) for start, row in zip(run.starts, rows, strict=True)
    ]
    legend = _legend_lines(names, font, WIDTH - 2 * MARGIN)
    top = MARGIN + HEADER_HEIGHT + LEGEND_LINE_HEIGHT * len(legend) + 10
    bottom = top + sum(lane.height for lane in lanes)
    image = Image.new("RGB", (WIDTH, bottom + AXIS_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)

    draw.text((MARGIN, MARGIN), f"minifal startup - run {run.run_id}", fill=INK, font=big)
    subtitle = f"{len(lanes)} runner start(s); seconds since the first process start"
    draw.text((MARGIN, MARGIN + 26), subtitle, fill=MUTED, font=font)
    instants = instant_phases(rows)
    for number, line in enumerate(legend):
        x, y = MARGIN, MARGIN + HEADER_HEIGHT + number * LEGEND_LINE_HEIGHT
        for name in line:
            _draw_swatch(draw, x, y, colours[name], instant=name in instants)
            draw.text((x + 20, y), name, fill=INK, font=font)
            x += _legend_item_width(name, font)

    end_s = max(event.end - run.origin for start in run.starts for event in start.events)
    axis = _TimeAxis.fit(MARGIN + LABEL_WIDTH, WIDTH - MARGIN, end_s)
    for tick in axis.ticks():
        x = axis.x(tick)
        draw.line([(x, top), (x, bottom)], fill=GRID)
        label = f"{tick:g}s"
        draw.text((x - font.getlength(label) / 2, bottom + 6), label, fill=INK, font=font)
    draw.line([(axis.left, bottom), (axis.right, bottom)], fill=MUTED)

    lane_top = top
    for lane in lanes:
        _draw_lane(draw, lane, lane_top, axis, run.origin, colours, font, big)
        lane_top += lane.height

    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _draw_lane(
    draw: Any,
    lane: _Lane,
    top: int,
    axis: _TimeAxis,
    run_origin: float,
    colours: dict[str, Colour],
    font: Any,
    big: Any,
) -> None:
    start, row = lane.start, lane.row
    bars_top, bars_bottom = top + LANE_PADDING, top + lane.height - LANE_PADDING
    first = axis.x(start.origin - run_origin)
    last = axis.x(max(event.end for event in start.events) - run_origin)
    draw.rectangle([first, bars_top, max(last, first + 2), bars_bottom], fill=LANE)
    draw.text((MARGIN, bars_top), row.label, fill=INK, font=big)
    ready = "not ready" if row.ready_at_s is None else f"ready at {row.ready_at_s:.1f}s"
    draw.text((MARGIN, bars_top + 24), f"{ready}, cache: {row.cache}", fill=MUTED, font=font)

    for event, level in lane.spans:
        left, right = axis.x(event.start - run_origin), axis.x(event.end - run_origin)
        bar_top = bars_top + level * (BAR_HEIGHT + BAR_GAP)
        colour = colours[event.phase]
        box = [left, bar_top, max(right, left + 1), bar_top + BAR_HEIGHT]
        draw.rectangle(box, fill=colour, outline=_darker(colour))
        duration = event.end - event.start
        for text in (f"{event.phase} {duration:.1f}s", f"{duration:.1f}s"):
            if font.getlength(text) + 6 <= right - left:
                draw.text((left + 3, bar_top + 4), text, fill=INK, font=font)
                break

    label_top = bars_bottom - INSTANT_LABEL_HEIGHT
    for event in start.events:
        if event.instant and event.phase != PROCESS_START:
            x = axis.x(event.start - run_origin)
            colour = colours[event.phase]
            draw.line([(x, bars_top - 2), (x, label_top)], fill=colour, width=3)
            text = f"{event.phase} {event.start - start.origin:.1f}s"
            width = font.getlength(text)
            text_left = x + 4 if x + 4 + width <= WIDTH - MARGIN // 2 else x - 4 - width
            draw.text((text_left, label_top + 1), text, fill=colour, font=font)


def _span_levels(start: RunnerStart) -> list[tuple[StartupEvent, int]]:
    """Each span with the first level free at its start: nested or overlapping spans go lower."""
    spans = sorted(
        (event for event in start.events if not event.instant),
        key=lambda event: (event.start, event.start - event.end),
    )
    level_ends: list[float] = []
    levels = []
    for span in spans:
        level = next((i for i, end in enumerate(level_ends) if end <= span.start), len(level_ends))
        if level == len(level_ends):
            level_ends.append(span.end)
        level_ends[level] = span.end
        levels.append((span, level))
    return levels


def _phase_colours(names: list[str]) -> dict[str, Colour]:
    unknown = [name for name in names if name not in PHASE_COLOURS]
    others = {name: OTHER_COLOURS[i % len(OTHER_COLOURS)] for i, name in enumerate(unknown)}
    return {**others, **PHASE_COLOURS}


def _darker(colour: Colour) -> Colour:
    red, green, blue = colour
    return int(red * 0.7), int(green * 0.7), int(blue * 0.7)


def _legend_item_width(name: str, font: Any) -> int:
    return 20 + int(font.getlength(name)) + 18  # swatch, name, gap


def _legend_lines(names: list[str], font: Any, width: int) -> list[list[str]]:
    lines: list[list[str]] = [[]]
    used = 0
    for name in names:
        item = _legend_item_width(name, font)
        if lines[-1] and used + item > width:
            lines.append([])
            used = 0
        lines[-1].append(name)
        used += item
    return lines


def _draw_swatch(draw: Any, x: int, y: int, colour: Colour, *, instant: bool) -> None:
    if instant:
        draw.line([(x + 7, y), (x + 7, y + 15)], fill=colour, width=3)
    else:
        draw.rectangle([x, y + 1, x + 14, y + 14], fill=colour, outline=_darker(colour))


def _tick_step(end_s: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving at most ten ticks."""
    magnitude = 10 ** math.floor(math.log10(max(end_s, 1e-3) / 10))
    return next(m * magnitude for m in (1, 2, 5, 10) if end_s / (m * magnitude) <= 10)


# --- command line ------------------------------------------------------------------------------


def main_startup_report(args: argparse.Namespace) -> int:
    """``minifal startup-report [--run ID] [--json] [--png PATH] [--data-dir D]``."""
    try:
        run = load_run(resolve_data_dir(args.data_dir), args.run)
    except RunNotFoundError as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 1
    if not run.starts:
        print(f"minifal: run {run.run_id} has no runner events yet ({run.path})", file=sys.stderr)
        return 1
    rows = report_rows(run)
    png: Path | None = Path(args.png) if args.png else run.path / TIMELINE_FILENAME
    try:
        render_timeline_png(run, png)
    except OSError as exc:  # a read-only data dir must not hide the table
        print(f"minifal: could not write the timeline {png}: {exc}", file=sys.stderr)
        png = None
    if args.json:
        report = {**report_json(run, rows), "timeline_png": None if png is None else str(png)}
        print(json.dumps(report, indent=2))
        return 0
    print(f"run {run.run_id}  ({run.path})")
    print(format_table(rows))
    print("seconds: how long each phase took; @phase and 'ready at': when, after the process start")
    graphs = format_graphs(rows)
    if graphs:
        print(graphs)
    if png is not None:
        print(f"timeline: {png}")
    return 0
