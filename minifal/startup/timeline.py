"""The startup timeline as a PNG (Pillow): one lane per runner start on a shared time axis."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minifal.startup.report import (
    PRECOMPILED,
    READY,
    RunnerRow,
    instant_phases,
    phase_names,
    report_rows,
)
from minifal.startup.runs import PROCESS_START, Run, RunnerStart, StartupEvent

TIMELINE_FILENAME = "startup.png"

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
    title = row.label if row.revision is None else f"{row.label}  {row.revision}"
    draw.text((MARGIN, bars_top), title, fill=INK, font=big)
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
