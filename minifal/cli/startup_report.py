"""``minifal startup-report``: the startup phases of a run's runners, side by side.

A text table (one row per runner start, one column per phase), the phases in progress (with how
long the same ones took last time), each runner's precompiled graphs and Dynamo seconds, or
JSON; and a PNG timeline next to the run's events.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

from minifal.host.data_dir import resolve_data_dir
from minifal.startup.progress import HISTORY_RUNS, run_in_progress
from minifal.startup.report import report_json, report_rows
from minifal.startup.report_text import format_graphs, format_in_progress, format_table
from minifal.startup.runs import RunNotFoundError, load_run, recent_runs, running_here
from minifal.startup.timeline import TIMELINE_FILENAME, render_timeline_png


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
    now = time.time()
    earlier = partial(recent_runs, run.path.parent, HISTORY_RUNS, but=run.run_id)
    rows = report_rows(run, run_in_progress(run, running_here, earlier))
    png: Path | None = Path(args.png) if args.png else run.path / TIMELINE_FILENAME
    try:
        render_timeline_png(run, png)
    except OSError as exc:  # a read-only data dir must not hide the table
        print(f"minifal: could not write the timeline {png}: {exc}", file=sys.stderr)
        png = None
    if args.json:
        report = {**report_json(run, rows, now), "timeline_png": None if png is None else str(png)}
        print(json.dumps(report, indent=2))
        return 0
    print(f"run {run.run_id}  ({run.path})")
    print(format_table(rows))
    print("seconds: how long each phase took; @phase and 'ready at': when, after the process start")
    for section in (format_in_progress(rows, now), format_graphs(rows)):
        if section:
            print(section)
    if png is not None:
        print(f"timeline: {png}")
    return 0
