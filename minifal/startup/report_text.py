"""A run's startup report as the text ``minifal startup-report`` prints: the table of phases,
the compiled graphs, the phases still in progress and when each signature switched to compiled
code. The rows come from ``report.py``."""

from __future__ import annotations

from minifal.cli.text_table import align_columns, short_node
from minifal.runner_contract import LOCAL_NODE
from minifal.startup.progress import phase_text
from minifal.startup.report import (
    COVERED_BY_OTHER_COLUMNS,
    RunnerRow,
    instant_phases,
    phase_names,
)


def format_table(rows: list[RunnerRow]) -> str:
    """Plain aligned columns; a phase's duration, or for an instant (``@name``) when it happened."""
    phases = [name for name in phase_names(rows) if name not in COVERED_BY_OTHER_COLUMNS]
    instants = instant_phases(rows)
    nodes = any(row.node not in (None, LOCAL_NODE) for row in rows)  # a column on a cluster
    revisions = len({row.revision for row in rows}) > 1  # a column once a deploy happened
    header = [
        "runner",
        *(["node"] if nodes else []),
        *(["revision"] if revisions else []),
        "pid",
        "started",
        *(f"@{name}" if name in instants else name for name in phases),
        "cache",
        "ready at",
    ]
    lines = [header]
    for row in rows:
        cells = [
            seconds_text(row.phases[name].value_s) if name in row.phases else "-" for name in phases
        ]
        lines.append(
            [
                row.label,
                *([short_node(row.node)] if nodes else []),
                *([row.revision or "-"] if revisions else []),
                "-" if row.pid is None else str(row.pid),
                f"+{row.started_at_s:.2f}",
                *cells,
                row.cache,
                "-" if row.ready_at_s is None else seconds_text(row.ready_at_s),
            ]
        )
    # runner, node, revision and cache read left to right; numbers align right
    text_columns = {0, len(header) - 2, *range(1, 1 + int(nodes) + int(revisions))}
    return align_columns(
        lines, right_aligned={i for i in range(len(header)) if i not in text_columns}
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
    lines += _switch_lines(rows)
    return "\n".join(lines)


def format_in_progress(rows: list[RunnerRow], now: float) -> str:
    """The phases begun and not ended, a line each: running for how long (and last time), or
    never finished (its process exited, when is not recorded: no duration is made up)."""
    lines = []
    for row in rows:
        for phase in row.in_progress:
            if phase.running:
                text = phase_text(phase.title, phase.elapsed_s(now), phase.last_s)
                lines.append(f"  {row.label}  running: {text}")
            else:
                began = f"began at {phase.start - row.origin:.2f} s"
                lines.append(
                    f"  {row.label}  never finished (its process exited): {phase.title}, {began}"
                )
    return "\n".join(["in progress:", *lines]) if lines else ""


def _switch_lines(rows: list[RunnerRow]) -> list[str]:
    """Serving while compiling: when each runner was ready, and each signature switched."""
    switch_rows = [(row, switch) for row in rows for switch in row.switches]
    if not switch_rows:
        return []
    lines = ["served eagerly from ready, then switched to compiled code:"]
    width = max(len(row.label) for row, _ in switch_rows)
    for row, switch in switch_rows:
        ready = "?" if row.ready_at_s is None else seconds_text(row.ready_at_s)
        if switch.switched:
            what = f"{switch.source} at {seconds_text(switch.at_s)} s"
        else:
            what = f"stayed eager ({switch.reason})"
        label = row.label.ljust(width)
        lines.append(f"  {label}  ready {ready} s  {what}  {switch.module} {switch.signature}")
    return lines


def seconds_text(value: float) -> str:
    return f"{value:.2f}"
