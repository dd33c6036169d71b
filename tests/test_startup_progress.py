"""Phases in progress: start lines paired with end lines, what runs now and what never finished,
how long the same work took last time (bounded history), the console's lines and the
dashboard's data. Synthetic events files; the one real process is this test's own (alive)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from startup_events import T0, ended_event

from minifal.fleet.dashboard import EarlierRuns, run_report, running_in
from minifal.host.processes import process_started_at, still_running
from minifal.startup.events import begin, finish, phase, read_events, record
from minifal.startup.progress import (
    PhaseHistory,
    background_lines,
    console_lines,
    describe,
    progress_line,
    run_in_progress,
)
from minifal.startup.report import report_json, report_rows
from minifal.startup.report_text import format_in_progress
from minifal.startup.runs import load_run, read_run, recent_runs, running_here

pytestmark = pytest.mark.unit

SIGNATURE = "args[0]=f16[1,4,64,64] grad=off"


def _started(runner: str, pid: int, name: str, start: float, **details: Any) -> dict[str, Any]:
    return {
        "kind": "start",
        "phase": name,
        "start": T0 + start,
        "runner_id": runner,
        "pid": pid,
        "details": details,
        "span": f"{pid}.{name}",
    }


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _runner_0(pid: int = 100) -> list[dict[str, Any]]:
    """Compiles (cache miss): setup and the compile are running when the file is read."""
    return [
        ended_event("runner-0", pid, "process_start", 0.0),
        ended_event("runner-0", pid, "imports", 0.0, 1.5),
        {**_started("runner-0", pid, "app_import", 1.5), "span": "a"},
        {**ended_event("runner-0", pid, "app_import", 1.5, 2.0), "span": "a"},
        _started("runner-0", pid, "setup", 2.0, app="SDTurbo"),
        _started("runner-0", pid, "compile_cache.compile", 3.0, key="sd", hit=False),
    ]


def _earlier_run(data_dir: Path, run_id: str, compile_s: float, end: float = -100.0) -> None:
    """A finished run, ``end`` seconds from T0: its compile took ``compile_s``."""
    start = end - compile_s - 10
    r = lambda *a, **k: ended_event("runner-0", 7, *a, **k)  # noqa: E731
    _write(
        data_dir / "runs" / run_id / "runner-0.jsonl",
        [
            r("process_start", start),
            r("imports", start, start + 4.0),
            r("setup", start + 5, end, app="SDTurbo"),
            r("compile_cache.compile", start + 6, start + 6 + compile_s, key="sd", hit=False),
            r("compile_cache.compile", start + 6, start + 7, key="other", hit=False),
        ],
    )


# --- writing --------------------------------------------------------------------------------------


def test_a_phase_writes_a_start_line_then_its_end_line_with_the_same_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "runner-0.jsonl"
    monkeypatch.setenv("MINIFAL_EVENTS_FILE", str(file))
    monkeypatch.setenv("MINIFAL_RUNNER_ID", "runner-0")
    with phase("setup", app="App", start="a detail, not the start time") as details:
        opened = begin("compile_cache.compile", 5.0, key="k")
        details["hit"] = True
    finish(opened, 9.0, key="k", hit=False)

    lines = read_events(file, starts=True)
    assert [(line.get("kind"), line["phase"]) for line in lines] == [
        ("start", "setup"),
        ("start", "compile_cache.compile"),
        (None, "setup"),
        (None, "compile_cache.compile"),
    ]
    assert lines[0]["span"] == lines[2]["span"] and lines[1]["span"] == lines[3]["span"]
    assert lines[0]["span"] != lines[1]["span"]
    assert lines[0]["details"] == {"app": "App", "start": "a detail, not the start time"}
    assert lines[2]["details"]["hit"] is True and lines[2]["start"] == lines[0]["start"]
    assert (lines[3]["start"], lines[3]["end"], lines[3]["duration_s"]) == (5.0, 9.0, 4.0)
    # what every older reader gets: finished phases only, as before
    assert [line["phase"] for line in read_events(file)] == ["setup", "compile_cache.compile"]


# --- pairing --------------------------------------------------------------------------------------


def test_start_lines_without_an_end_are_the_unfinished_phases(tmp_path: Path) -> None:
    _write(tmp_path / "runs" / "r" / "runner-0.jsonl", _runner_0())
    (start,) = load_run(tmp_path).starts

    assert [event.phase for event in start.events] == ["process_start", "imports", "app_import"]
    assert [event.phase for event in start.unfinished] == ["setup", "compile_cache.compile"]
    assert all(not event.instant for event in start.unfinished)
    assert start.last_written == T0 + 3.0
    assert report_rows(load_run(tmp_path))[0].phases.keys() == {"imports", "app_import"} | {
        "process_start"
    }


def test_a_start_line_pairs_with_an_end_line_record_wrote_at_the_same_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phase timed by hand (``record()`` at its end) announced by ``begin()`` with its start."""
    file = tmp_path / "runs" / "r" / "runner-0.jsonl"
    monkeypatch.setenv("MINIFAL_EVENTS_FILE", str(file))
    monkeypatch.setenv("MINIFAL_RUNNER_ID", "runner-0")
    graph = {"module": "UNet", "signature": SIGNATURE}
    record("process_start", T0)
    begin("precompiled.compile", T0 + 1.25, **graph)
    begin("precompiled.compile", T0 + 2.5, **graph, in_worker=True)
    record("precompiled.compile", T0 + 1.25, T0 + 30.0, **graph, in_worker=True)

    (start,) = load_run(tmp_path).starts

    assert [(e.phase, e.start, e.end) for e in start.events][1:] == [
        ("precompiled.compile", T0 + 1.25, T0 + 30.0)
    ]
    assert [(e.phase, e.start) for e in start.unfinished] == [("precompiled.compile", T0 + 2.5)]


def test_files_without_start_lines_parse_as_before(tmp_path: Path) -> None:
    _earlier_run(tmp_path, "old", compile_s=80.0)
    (start,) = load_run(tmp_path).starts
    assert start.unfinished == ()
    assert len(start.events) == 5


def test_a_restarted_runners_earlier_process_is_not_running(tmp_path: Path) -> None:
    second = [
        ended_event("runner-0", 200, "process_start", 50.0),
        _started("runner-0", 200, "setup", 52.0, app="SDTurbo"),
    ]
    _write(tmp_path / "runs" / "r" / "runner-0.jsonl", _runner_0(pid=100) + second)
    run = load_run(tmp_path)

    found = run_in_progress(run, lambda start: True, lambda: [])

    assert [(p.runner, p.phase, p.running) for p in found["runner-0"]] == [
        ("runner-0", "setup", False),
        ("runner-0", "compile_cache.compile", False),
    ]
    assert found["runner-0"][0].stopped_at == T0 + 3.0  # the process's last word
    assert found["runner-0"][0].elapsed_s(T0 + 1000) == 1.0
    assert [(p.phase, p.running) for p in found["runner-0#2"]] == [("setup", True)]


def test_a_crashed_runners_phase_does_not_run_forever(tmp_path: Path) -> None:
    _write(tmp_path / "runs" / "r" / "runner-0.jsonl", _runner_0(pid=100))
    run = load_run(tmp_path)
    (crashed,) = run_in_progress(run, lambda start: False, lambda: [])["runner-0"][1:]
    assert not crashed.running
    assert crashed.elapsed_s(T0 + 10_000) == 0.0  # it began at its process's last event
    rows = report_rows(run, run_in_progress(run, lambda start: False, lambda: []))
    text = format_in_progress(rows, T0 + 10_000)
    assert "runner-0  never finished (its process exited): compiling sd, began at 3.00 s" in text


def test_running_here_is_this_machines_process_with_that_start_time(tmp_path: Path) -> None:
    pid = os.getpid()
    started = process_started_at(pid)
    assert started is not None and still_running(pid, started)
    assert not still_running(pid, started - 3600)  # the same pid, another process
    lines = [
        {**ended_event("runner-0", pid, "process_start", 0.0, node="local"), "start": started},
        _started("runner-0", pid, "setup", 2.0),
    ]
    _write(tmp_path / "runs" / "here" / "runner-0.jsonl", lines)
    (start,) = load_run(tmp_path, "here").starts
    assert running_here(start)
    on_ray = {**lines[0], "details": {"node": "ray-node-1"}}
    _write(tmp_path / "runs" / "ray" / "runner-0.jsonl", [on_ray, lines[1]])
    assert not running_here(load_run(tmp_path, "ray").starts[0])  # not known from here


# --- last time ------------------------------------------------------------------------------------


def test_last_time_is_the_latest_same_work_finished_before_it_began(tmp_path: Path) -> None:
    _earlier_run(tmp_path, "a", compile_s=101.0, end=-500.0)
    _earlier_run(tmp_path, "b", compile_s=98.0, end=-100.0)
    history = PhaseHistory(start for run in ("a", "b") for start in load_run(tmp_path, run).starts)

    assert history.last_s("compile_cache.compile", {"key": "sd", "hit": False}, T0) == 98.0
    assert history.last_s("compile_cache.compile", {"key": "sd", "hit": False}, T0 - 300) == 101.0
    assert history.last_s("compile_cache.compile", {"key": "sd", "hit": False}, T0 - 5000) is None
    assert history.last_s("compile_cache.compile", {"key": "other", "hit": False}, T0) == 1.0
    assert history.last_s("compile_cache.compile", {"key": "sd", "hit": True}, T0) is None
    assert history.last_s("setup", {"app": "SDTurbo"}, T0) == 98.0 + 10 - 5
    assert history.last_s("setup", {"app": "Another"}, T0) is None
    assert history.last_s("imports", {}, T0) == 4.0


def test_failures_and_a_lease_claim_are_not_last_times(tmp_path: Path) -> None:
    r = lambda *a, **k: ended_event("runner-0", 7, *a, **k)  # noqa: E731
    _write(
        tmp_path / "runs" / "r" / "runner-0.jsonl",
        [
            r("process_start", 0.0),
            r("compile_cache.wait", 1.0, 61.0, key="sd"),  # waited for another runner
            r("compile_cache.wait", 70.0, 70.1, key="sd", role="compile"),  # took the lease
            r("setup", 1.0, 2.0, app="A", error="RuntimeError: boom"),
            r("precompiled.compile", 3.0, 48.0, module="UNet", signature=SIGNATURE),
        ],
    )
    history = PhaseHistory(load_run(tmp_path).starts)
    assert history.last_s("compile_cache.wait", {"key": "sd"}, T0 + 100) == 60.0
    assert history.last_s("setup", {"app": "A"}, T0 + 100) is None
    graph = {"module": "UNet", "signature": SIGNATURE}
    assert history.last_s("precompiled.compile", graph, T0 + 100) == 45.0
    other = {"module": "UNet", "signature": "args[0]=f16[1,4,64,96] grad=off"}
    assert history.last_s("precompiled.compile", other, T0 + 100) is None


def test_recent_runs_reads_a_bounded_number_of_the_newest(tmp_path: Path) -> None:
    for number in range(8):
        _earlier_run(tmp_path, f"run-{number}", compile_s=10.0 + number)
        run_dir = tmp_path / "runs" / f"run-{number}"
        os.utime(run_dir, (T0 + number, T0 + number))
    (tmp_path / "runs" / "stray-file").write_text("not a run")

    runs = recent_runs(tmp_path / "runs", 3, but="run-7")

    assert [run.run_id for run in runs] == ["run-6", "run-5", "run-4"]
    assert recent_runs(tmp_path / "no-such-dir", 3) == []


# --- what is said ---------------------------------------------------------------------------------


def test_describe_says_what_a_phase_does() -> None:
    graph = {"module": "UNet", "signature": "1x4x64x64"}
    assert describe("precompiled.compile", {**graph, "in_worker": True}) == (
        "compiling UNet 1x4x64x64 in a worker"
    )
    assert describe("precompiled.load", graph) == "loading UNet 1x4x64x64"
    assert describe("compile_cache.wait", {"key": "sd"}) == (
        "waiting for another runner's compile of sd"
    )
    assert describe("compile_cache.compile", {"key": "sd", "hit": True}) == (
        "warming up sd (cache hit)"
    )
    assert describe("setup", {"app": "SDTurbo"}) == "setup() of SDTurbo"
    assert describe("model_download", {}) == "model download"


def test_the_console_line_names_what_runs_with_last_times(tmp_path: Path) -> None:
    _earlier_run(tmp_path, "before", compile_s=101.0)
    _write(tmp_path / "runs" / "now" / "runner-0.jsonl", _runner_0())
    run = load_run(tmp_path, "now")
    history = PhaseHistory([*load_run(tmp_path, "before").starts, *run.starts])
    (start,) = run.starts

    lines = console_lines(start, T0, history, since=T0, now=T0 + 48.0)

    assert lines == [
        "done importing Python modules: 1.5 s, last time 4.0 s",
        "starting: 48 s; compiling sd: 45 s, last time 101 s; "
        "setup() of SDTurbo: 46 s, last time 106 s",
    ]
    later = console_lines(start, T0, history, since=T0 + 48.0, now=T0 + 53.0)
    assert later == [
        "starting: 53 s; compiling sd: 50 s, last time 101 s; "
        "setup() of SDTurbo: 51 s, last time 106 s"
    ]


def test_the_console_line_names_a_precompiled_compile_in_a_worker(tmp_path: Path) -> None:
    graph = {"key": "sd/precompiled", "module": "UNet2DConditionModel", "signature": SIGNATURE}
    r = lambda *a, **k: ended_event("runner-0", 7, *a, **k)  # noqa: E731
    _write(
        tmp_path / "runs" / "before" / "runner-0.jsonl",
        [r("process_start", -300.0), r("precompiled.compile", -250.0, -149.0, **graph)],
    )
    _write(
        tmp_path / "runs" / "now" / "runner-0.jsonl",
        [
            ended_event("runner-0", 100, "process_start", 0.0),
            _started("runner-0", 100, "precompiled.compile", 3.0, **graph, in_worker=True),
        ],
    )
    run = load_run(tmp_path, "now")
    history = PhaseHistory([*load_run(tmp_path, "before").starts, *run.starts])
    (start,) = run.starts

    assert console_lines(start, T0, history, since=T0, now=T0 + 48.0) == [
        f"starting: 48 s; compiling UNet2DConditionModel {SIGNATURE} in a worker: 45 s, "
        "last time 101 s"
    ]


def test_after_ready_the_console_says_what_still_compiles_then_falls_silent(
    tmp_path: Path,
) -> None:
    """Serving while compiling: the compiles after ready are reported until none runs."""
    graph = {"key": "sd/precompiled", "module": "UNet2DConditionModel", "signature": SIGNATURE}
    path = tmp_path / "runs" / "now" / "runner-0.jsonl"
    lines = [
        ended_event("runner-0", 100, "process_start", 0.0),
        ended_event("runner-0", 100, "ready", 20.0),
        _started("runner-0", 100, "precompiled.compile", 21.0, **graph, in_worker=True),
    ]
    _write(path, lines)
    (start,) = load_run(tmp_path, "now").starts
    history = PhaseHistory([start])
    assert background_lines(start, history, since=T0 + 20.0, now=T0 + 66.0) == [
        f"serving; in the background: compiling UNet2DConditionModel {SIGNATURE} in a worker: 45 s"
    ]

    done = {**ended_event("runner-0", 100, "precompiled.compile", 21.0, 121.0, **graph)}
    done["span"] = lines[-1]["span"]
    _write(path, [*lines, done])
    (start,) = load_run(tmp_path, "now").starts
    history = PhaseHistory([start])
    assert background_lines(start, history, since=T0 + 66.0, now=T0 + 126.0) == [
        f"done compiling UNet2DConditionModel {SIGNATURE}: 100 s"
    ]
    assert background_lines(start, history, since=T0 + 126.0, now=T0 + 141.0) is None
    assert background_lines(None, history, since=T0, now=T0 + 1.0) is None


def test_the_console_line_before_any_event_and_between_phases(tmp_path: Path) -> None:
    _earlier_run(tmp_path, "before", compile_s=101.0)
    history = PhaseHistory(load_run(tmp_path, "before").starts)
    assert console_lines(None, T0, history, since=T0, now=T0 + 5.0) == [
        "starting: 5.0 s; importing Python modules: 5.0 s, last time 4.0 s"
    ]
    r = lambda *a, **k: ended_event("runner-0", 7, *a, **k)  # noqa: E731
    _write(
        tmp_path / "runs" / "failed" / "runner-0.jsonl",
        [r("process_start", 0.0), r("setup", 0.0, 0.5, app="A", error="OSError: disk")],
    )
    (start,) = load_run(tmp_path, "failed").starts
    assert console_lines(start, T0, history, since=T0 + 1, now=T0 + 5.0) == [
        "starting: 5.0 s; setup() of A failed: OSError: disk"
    ]
    assert progress_line([], T0) == ""


# --- report and dashboard data --------------------------------------------------------------------


def test_the_report_json_has_the_phases_in_progress(tmp_path: Path) -> None:
    _earlier_run(tmp_path, "before", compile_s=101.0)
    _write(tmp_path / "runs" / "now" / "runner-0.jsonl", _runner_0())
    run = load_run(tmp_path, "now")
    found = run_in_progress(run, lambda start: True, lambda: recent_runs(tmp_path / "runs", 5))
    rows = report_rows(run, found)

    (runner,) = report_json(run, rows, now=T0 + 48.0)["runners"]

    assert runner["in_progress"] == [
        {
            "phase": "setup",
            "title": "setup() of SDTurbo",
            "start_s": 2.0,
            "end_s": 48.0,
            "running": True,
            "last_s": 106.0,
            "details": {"app": "SDTurbo"},
        },
        {
            "phase": "compile_cache.compile",
            "title": "compiling sd",
            "start_s": 3.0,
            "end_s": 48.0,
            "running": True,
            "last_s": 101.0,
            "details": {"key": "sd", "hit": False},
        },
    ]
    assert "runner-0  running: compiling sd: 45 s, last time 101 s" in format_in_progress(
        rows, T0 + 48.0
    )


def test_the_dashboards_run_api_data_draws_what_runs(tmp_path: Path) -> None:
    """What ``/dashboard/api/runs/<id>`` answers (the route only adds the gateway's live pids)."""
    _earlier_run(tmp_path, "before", compile_s=101.0)
    _write(tmp_path / "runs" / "now" / "runner-0.jsonl", _runner_0())
    earlier = EarlierRuns(tmp_path / "runs")

    report = run_report(tmp_path, "now", lambda start: start.pid == 100, earlier, now=T0 + 20)

    assert report is not None
    (runner,) = report["runners"]
    assert [(p["phase"], p["end_s"], p["last_s"]) for p in runner["in_progress"]] == [
        ("setup", 20.0, 106.0),
        ("compile_cache.compile", 20.0, 101.0),
    ]
    # a process that is gone: its phases end where it stopped writing
    gone = run_report(tmp_path, "now", lambda start: False, earlier, now=T0 + 20)
    assert gone is not None
    assert [p["running"] for p in gone["runners"][0]["in_progress"]] == [False, False]
    assert [p["end_s"] for p in gone["runners"][0]["in_progress"]] == [3.0, 3.0]
    assert run_report(tmp_path, "no-such-run") is None


def test_the_gateways_live_runners_run_in_its_own_run_only(tmp_path: Path) -> None:
    _write(tmp_path / "runs" / "now" / "runner-0.jsonl", _runner_0(pid=100))
    (start,) = load_run(tmp_path, "now").starts  # pid 100 on a node only the gateway knows
    assert running_in("now", "now", lambda: {100})(start)
    assert not running_in("now", "now", lambda: {101})(start)
    assert not running_in("now", "another run", lambda: {100})(start)


def test_earlier_runs_are_read_once_per_run(tmp_path: Path) -> None:
    _earlier_run(tmp_path, "before", compile_s=101.0)
    earlier = EarlierRuns(tmp_path / "runs")
    first = earlier("now")
    _earlier_run(tmp_path, "later", compile_s=5.0)
    assert earlier("now") is first
    assert [run.run_id for run in earlier("another")] != []
    assert read_run(tmp_path / "runs" / "before").run_id == "before"
    assert time.time() > T0
