"""``minifal startup-report`` on synthetic events files, and ``minifal runners`` against a real
HTTP server on a free port."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from startup_events import T0, ended_event

from minifal.cli.runners_table import format_duration, format_runners, main_runners
from minifal.cli.startup_report import main_startup_report
from minifal.startup.report import phase_names, report_json, report_rows
from minifal.startup.report_text import format_graphs, format_table
from minifal.startup.runs import RunNotFoundError, load_run
from minifal.startup.timeline import render_timeline_png

RUN_ID = "20250615-120000-4242"


def _write_events(path: Path, events: list[dict[str, Any]], torn_tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(event) + "\n" for event in events) + torn_tail)


def _runner_0() -> list[dict[str, Any]]:
    """Compiles: the cache had nothing for its key."""
    e = lambda *a, **k: ended_event("runner-0", 100, *a, **k)  # noqa: E731
    return [
        e("process_start", 0.0),
        e("imports", 0.0, 1.5),
        e("app_import", 1.5, 2.1, reference="app.py"),
        e("compile_cache.load", 2.3, 2.4, key="unet-abc", hit=False, reason="absent"),
        e("compile_cache.compile", 2.4, 26.0, key="unet-abc"),
        e("compile_cache.sync", 26.0, 28.0, key="unet-abc", bytes=123_456, format="mega"),
        e("setup", 2.2, 30.0),
        e("ready", 30.5),
        e("first_request", 31.0, 32.0),
    ]


def _runner_1() -> list[dict[str, Any]]:
    """Waits for runner-0's compile, then hits; restarts later with an unknown phase."""
    first = lambda *a, **k: ended_event("runner-1", 101, *a, **k)  # noqa: E731
    second = lambda *a, **k: ended_event("runner-1", 205, *a, **k)  # noqa: E731
    return [
        first("process_start", 0.3),
        first("imports", 0.3, 1.7),
        first("app_import", 1.7, 2.3),
        first("compile_cache.wait", 2.5, 27.5, key="unet-abc"),
        first("compile_cache.load", 27.5, 28.0, key="unet-abc", hit=True, bytes=123_456),
        first("setup", 2.4, 28.2),
        first("ready", 28.6),
        second("process_start", 40.0),
        second("imports", 40.0, 41.2),
        second("app_import", 41.2, 41.8),
        second("model_download", 41.9, 44.0, bytes=1_000_000),
        second("compile_cache.load", 44.1, 44.6, key="unet-abc", hit=True),
        second("setup", 41.9, 45.0),
        second("ready", 45.2),
        first("teardown", 46.0, 46.5),  # the old process's last word, after the restart
    ]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / RUN_ID
    _write_events(run / "runner-0.jsonl", _runner_0())
    _write_events(run / "runner-1.jsonl", _runner_1(), torn_tail='{"phase": "first_req')
    _write_events(run / "gateway.jsonl", [{"event": "listening", "port": 8080, "start": T0}])
    (run / "runner-0.log").write_text("not events\n")
    return tmp_path


def _rows_by_label(data_dir: Path) -> dict[str, Any]:
    return {row.label: row for row in report_rows(load_run(data_dir))}


# --- loading and rows ----------------------------------------------------------------------------


@pytest.mark.unit
def test_load_run_finds_runners_and_splits_restarts(data_dir: Path) -> None:
    run = load_run(data_dir)

    assert run.run_id == RUN_ID
    assert [start.label for start in run.starts] == ["runner-0", "runner-1", "runner-1#2"]
    assert [start.pid for start in run.starts] == [100, 101, 205]
    assert run.origin == T0
    # The old process's teardown, written after the restart, stays with the old process.
    assert "teardown" in {event.phase for event in run.starts[1].events}
    assert "teardown" not in {event.phase for event in run.starts[2].events}


@pytest.mark.unit
def test_restart_written_to_another_file(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r"
    _write_events(run / "runner-2.jsonl", [ended_event("runner-2", 9, "process_start", 0.0)])
    _write_events(
        run / "runner-2.restart.jsonl", [ended_event("runner-2", 12, "process_start", 9.0)]
    )

    starts = load_run(tmp_path).starts

    assert [(start.label, start.pid) for start in starts] == [("runner-2", 9), ("runner-2#2", 12)]


@pytest.mark.unit
def test_latest_run_by_mtime_and_explicit_run(data_dir: Path) -> None:
    older = data_dir / "runs" / "20240101-000000-1"
    _write_events(older / "runner-0.jsonl", _runner_0())
    os.utime(older / "runner-0.jsonl", (1, 1))
    os.utime(older, (1, 1))

    assert load_run(data_dir).run_id == RUN_ID
    assert load_run(data_dir, "20240101-000000-1").run_id == "20240101-000000-1"
    with pytest.raises(RunNotFoundError):
        load_run(data_dir, "nope")
    with pytest.raises(RunNotFoundError):
        load_run(data_dir / "empty")


@pytest.mark.unit
def test_rows_phases_ready_and_cache(data_dir: Path) -> None:
    rows = _rows_by_label(data_dir)

    compiled, waited, restarted = rows["runner-0"], rows["runner-1"], rows["runner-1#2"]
    assert compiled.cache == "miss (compiled)"
    assert waited.cache == "waited+hit"
    assert restarted.cache == "hit"
    assert compiled.ready_at_s == pytest.approx(30.5)
    assert waited.ready_at_s == pytest.approx(28.3)  # relative to its own process start
    assert restarted.started_at_s == pytest.approx(40.0)
    assert restarted.ready_at_s == pytest.approx(5.2)
    assert compiled.phases["compile_cache.compile"].duration_s == pytest.approx(23.6)
    assert compiled.phases["compile_cache.sync"].details == (
        {"key": "unet-abc", "bytes": 123_456, "format": "mega"},
    )
    assert restarted.phases["model_download"].duration_s == pytest.approx(2.1)


@pytest.mark.unit
def test_phases_are_ordered_as_they_happen(data_dir: Path) -> None:
    names = phase_names(report_rows(load_run(data_dir)))

    assert names[:4] == ["process_start", "imports", "app_import", "setup"]
    assert names.index("compile_cache.load") < names.index("compile_cache.compile")
    assert names.index("compile_cache.compile") < names.index("compile_cache.sync")
    assert names.index("setup") < names.index("model_download") < names.index("ready")
    # runner-1#2 is ready 5.2s after its start, long before runner-0's sync: still after it.
    assert names.index("compile_cache.sync") < names.index("ready")
    assert names[-2:] == ["first_request", "teardown"]


@pytest.mark.unit
def test_cache_status_with_several_keys(tmp_path: Path) -> None:
    e = lambda *a, **k: ended_event("runner-0", 7, *a, **k)  # noqa: E731
    _write_events(
        tmp_path / "runs" / "r" / "runner-0.jsonl",
        [
            e("process_start", 0.0),
            e("compile_cache.wait", 1.0, 2.0),  # no key: counts for both
            e("compile_cache.load", 2.0, 2.1, key="unet", hit=True),
            e("compile_cache.load", 2.1, 2.2, key="vae", hit=False),
            e("compile_cache.compile", 2.2, 9.0, key="vae"),
        ],
    )

    row = report_rows(load_run(tmp_path))[0]

    assert row.cache == "waited+hit, waited+miss (compiled)"
    assert row.phases["compile_cache.load"].count == 2
    assert row.phases["compile_cache.load"].duration_s == pytest.approx(0.2)
    assert row.ready_at_s is None


# --- text, JSON, PNG -----------------------------------------------------------------------------


@pytest.mark.unit
def test_text_table_has_a_row_per_start_and_the_cache_column(data_dir: Path) -> None:
    table = format_table(report_rows(load_run(data_dir)))
    header, *lines = table.splitlines()

    assert header.split()[:4] == ["runner", "pid", "started", "imports"]
    assert "model_download" in header and "compile_cache.wait" in header
    assert re.split(r"\s{2,}", header)[-2:] == ["cache", "ready at"]
    assert [line.split()[0] for line in lines] == ["runner-0", "runner-1", "runner-1#2"]
    assert "miss (compiled)" in lines[0] and lines[0].endswith("30.50")
    assert "waited+hit" in lines[1] and lines[1].endswith("28.30")
    assert " hit " in lines[2] and lines[2].endswith("5.20")
    assert "23.60" in lines[0]  # compile duration
    assert len({len(line) for line in [header, *lines]}) == 1  # aligned


@pytest.mark.unit
def test_instant_phases_show_when_they_happened(tmp_path: Path) -> None:
    e = lambda *a, **k: ended_event("runner-0", 7, *a, **k)  # noqa: E731
    _write_events(
        tmp_path / "runs" / "r" / "runner-0.jsonl",
        [e("process_start", 5.0), e("setup", 6.0, 20.0), e("startup_timeout", 25.0, timeout_s=20)],
    )

    header, line = format_table(report_rows(load_run(tmp_path))).splitlines()

    assert "@startup_timeout" in header
    assert line.split() == ["runner-0", "7", "+0.00", "14.00", "20.00", "-", "-"]


@pytest.mark.unit
def test_runners_on_ray_nodes_get_a_node_column(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r"
    for runner, node in (("runner-0", "a" * 56), ("runner-1", "b" * 56)):
        e = lambda *a, runner=runner, **k: ended_event(runner, 7, *a, **k)  # noqa: E731
        _write_events(run_dir / f"{runner}.jsonl", [e("process_start", 5.0, node=node)])

    rows = report_rows(load_run(tmp_path))
    header, *lines = format_table(rows).splitlines()

    assert header.split()[:3] == ["runner", "node", "pid"]
    assert [line.split()[1] for line in lines] == ["a" * 12, "b" * 12]
    assert [row.node for row in rows] == ["a" * 56, "b" * 56]


@pytest.mark.unit
def test_runners_of_several_revisions_get_a_revision_column(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r"
    for runner, revision in (("runner-0", "r1-aaaaaaaa"), ("runner-1", "r2-bbbbbbbb")):
        e = lambda *a, runner=runner, **k: ended_event(runner, 7, *a, **k)  # noqa: E731
        events = [e("process_start", 5.0, node="local", revision=revision), e("ready", 6.0)]
        _write_events(run_dir / f"{runner}.jsonl", events)

    rows = report_rows(load_run(tmp_path))
    header, *lines = format_table(rows).splitlines()

    assert header.split()[:3] == ["runner", "revision", "pid"]
    assert [line.split()[1] for line in lines] == ["r1-aaaaaaaa", "r2-bbbbbbbb"]
    assert [row.revision for row in rows] == ["r1-aaaaaaaa", "r2-bbbbbbbb"]


@pytest.mark.unit
def test_json_report_keys(data_dir: Path) -> None:
    run = load_run(data_dir)
    report = report_json(run, report_rows(run))

    assert set(report) == {"run_id", "path", "origin", "phases", "runners"}
    runner = report["runners"][1]
    assert set(runner) == {
        "runner",
        "runner_id",
        "start_number",
        "pid",
        "node",
        "revision",
        "started_at_s",
        "ready_at_s",
        "cache",
        "dynamo_s",
        "graphs",
        "switches",
        "phases",
        "in_progress",
    }
    assert runner["in_progress"] == []  # these files have no start lines: every phase ended
    assert (runner["runner"], runner["start_number"], runner["cache"]) == (
        "runner-1",
        1,
        "waited+hit",
    )
    assert set(runner["phases"]["compile_cache.load"]) == {
        "start_s",
        "end_s",
        "duration_s",
        "count",
        "instant",
        "details",
    }
    assert runner["phases"]["compile_cache.load"]["details"] == [
        {"key": "unet-abc", "hit": True, "bytes": 123_456}
    ]
    json.dumps(report)  # serialisable as is


@pytest.mark.unit
def test_timeline_png_is_a_real_image(data_dir: Path, tmp_path: Path) -> None:
    run = load_run(data_dir)

    path = render_timeline_png(run, tmp_path / "out" / "timeline.png")

    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 800 and 200 <= height <= 2000
        assert len(image.getcolors(maxcolors=100_000) or []) > 10  # bars, text: not a blank canvas


# --- CLI entry -----------------------------------------------------------------------------------


def _report_args(data_dir: Path, **overrides: Any) -> argparse.Namespace:
    return argparse.Namespace(
        **{"run": None, "json": False, "png": None, "data_dir": str(data_dir), **overrides}
    )


@pytest.mark.unit
def test_main_prints_table_and_writes_default_png(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_startup_report(_report_args(data_dir)) == 0

    out = capsys.readouterr().out
    png = data_dir / "runs" / RUN_ID / "startup.png"
    assert "runner-1#2" in out and f"timeline: {png}" in out
    assert png.stat().st_size > 1000


@pytest.mark.unit
def test_main_json_and_png_override(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "elsewhere.png"

    assert main_startup_report(_report_args(data_dir, json=True, png=str(png), run=RUN_ID)) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["run_id"] == RUN_ID and report["timeline_png"] == str(png)
    assert [runner["runner"] for runner in report["runners"]] == [
        "runner-0",
        "runner-1",
        "runner-1#2",
    ]
    assert png.is_file()


@pytest.mark.unit
def test_main_without_runs_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_startup_report(_report_args(tmp_path)) == 1
    assert "no runs under" in capsys.readouterr().err


# --- minifal runners -----------------------------------------------------------------------------

RUNNERS = {
    "app": "sd-turbo",
    "run_id": RUN_ID,
    "runners": [
        {
            "alias": "sd-turbo",
            "machine_type": "GPU-H100",
            "runner_id": "runner-0",
            "in_flight_requests": 2,
            "expires_in": None,
            "uptime": 3725.4,
            "revision": "a1b2c3",
            "state": "RUNNING",
            "startup_seconds": 30.5,
            "gpus": "0",
            "pid": 100,
            "port": 9001,
            "node": "local",
            "last_exit_reason": None,
        },
        {
            "alias": "sd-turbo",
            "machine_type": "GPU-H100",
            "runner_id": "runner-1",
            "in_flight_requests": 0,
            "expires_in": 185.0,
            "uptime": 12.0,
            "revision": "a1b2c3",
            "state": "SETUP",
            "startup_seconds": None,
            "gpus": "1",
            "pid": 205,
            "port": 9002,
            "node": "0f3c29b1d2e4aa55b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80",
            "last_exit_reason": "startup timeout",
        },
    ],
}
AUTH_KEY = "secret-key"


@pytest.mark.unit
def test_format_runners_from_a_dict() -> None:
    title, header, first, second, note = format_runners(RUNNERS).splitlines()

    assert title == f"app sd-turbo, run {RUN_ID}: 2 runner(s)"
    assert re.split(r"\s{2,}", header)[:3] == ["Alias", "Machine Type", "Runner ID"]
    for column in (
        "In Flight Requests",
        "Expires In",
        "Uptime",
        "Revision",
        "State",
        "Startup",
        "GPUs",
        "Node",
    ):
        assert column in header
    assert first.split() == [
        "sd-turbo",
        "GPU-H100",
        "runner-0",
        "2",
        "-",
        "1h",
        "02m",
        "a1b2c3",
        "RUNNING",
        "30.5s",
        "0",
        "local",
    ]
    assert second.split() == [
        "sd-turbo",
        "GPU-H100",
        "runner-1",
        "0",
        "3m",
        "05s",
        "12s",
        "a1b2c3",
        "SETUP",
        "-",
        "1",
        "0f3c29b1d2e4",
    ]
    assert header.index("State") == first.index("RUNNING") == second.index("SETUP")
    assert note == "runner-1: last exit: startup timeout"


@pytest.mark.unit
def test_format_runners_says_which_gpu_runners_run_on_cpu() -> None:
    runners = [{**runner, "gpus": ""} for runner in RUNNERS["runners"]]
    lines = format_runners({**RUNNERS, "runners": runners}).splitlines()
    assert lines[2].split()[-2] == "CPU"  # runner-0, on this machine
    assert lines[3].split()[-2] == "-"  # runner-1, on a Ray node: its GPUs are Ray's
    assert lines[4] == (
        "runner-0: on CPU here (no GPU was visible), though the app asks for GPU-H100"
    )


@pytest.mark.unit
def test_format_runners_lists_the_last_revisions() -> None:
    revisions = {
        "serving": "r2-bbbbbbbb",
        "rollout": None,
        "revisions": [
            {"revision": "r1-aaaaaaaa", "status": "retired", "strategy": None, "reason": None},
            {"revision": "r2-bbbbbbbb", "status": "serving", "strategy": "rolling"},
            {
                "revision": "r3-cccccccc",
                "status": "failed",
                "strategy": "recreate",
                "reason": "runner-4: setup() failed",
            },
        ],
    }
    lines = format_runners({**RUNNERS, "revisions": revisions}).splitlines()

    assert lines[-3:] == [
        "revision r1-aaaaaaaa: retired",
        "revision r2-bbbbbbbb: serving (rolling)",
        "revision r3-cccccccc: failed (recreate): runner-4: setup() failed",
    ]


@pytest.mark.unit
def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, 0, 59.9, 60, 3599, 7322)] == [
        "-",
        "0s",
        "59s",
        "1m 00s",
        "59m 59s",
        "2h 02m",
    ]


class _GatewayHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/runners":
            self._send(404, {"detail": "not found"})
        elif self.headers.get("Authorization") != f"Key {AUTH_KEY}":
            self._send(401, {"detail": "unauthorized"})
        else:
            self._send(200, RUNNERS)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gateway_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _GatewayHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _runners_args(url: str, **overrides: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"url": url, "json": False, "auth_key": None, **overrides})


@pytest.mark.process
def test_runners_over_http_with_key(gateway_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_runners(_runners_args(gateway_url, auth_key=AUTH_KEY)) == 0
    assert capsys.readouterr().out.strip() == format_runners(RUNNERS)

    assert main_runners(_runners_args(gateway_url + "/", auth_key=AUTH_KEY, json=True)) == 0
    assert json.loads(capsys.readouterr().out) == RUNNERS


@pytest.mark.process
def test_runners_key_from_environment(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MINIFAL_AUTH_KEY", AUTH_KEY)

    assert main_runners(_runners_args(gateway_url)) == 0
    assert "runner-1" in capsys.readouterr().out


@pytest.mark.process
def test_runners_without_key_is_unauthorized(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MINIFAL_AUTH_KEY", raising=False)

    assert main_runners(_runners_args(gateway_url)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "401" in captured.err and "--auth-key" in captured.err


@pytest.mark.unit
def test_runners_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    assert main_runners(_runners_args(f"http://127.0.0.1:{port}")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"minifal: cannot reach the gateway at http://127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.unit
def test_precompiled_graphs_and_dynamo_seconds_per_runner(tmp_path: Path) -> None:
    """The compiler captured (Dynamo) and compiled each shape; the warm runner loaded them."""
    shape_a, shape_b = "args[0]=f16[1,4,64,64] grad=off", "args[0]=f16[1,4,64,96] grad=off"
    cold = lambda *a, **k: ended_event("runner-0", 1, *a, **k)  # noqa: E731
    warm = lambda *a, **k: ended_event("runner-1", 2, *a, **k)  # noqa: E731
    _write_events(
        tmp_path / "runs" / "r" / "runner-0.jsonl",
        [
            cold("process_start", 0.0),
            cold("precompiled.compile", 10.0, 50.0, module="UNet", signature=shape_a, dynamo_s=6.5),
            cold("precompiled.compile", 50.0, 80.0, module="UNet", signature=shape_b, dynamo_s=5.0),
            cold("precompiled.compile", 80.0, 81.0, module="VAE", signature=shape_a, error="no"),
            cold("compile_cache.compile", 9.0, 81.0, hit=False, dynamo_s=11.5),
            cold("precompiled", 5.0, 82.0, key="k", dynamo_s=11.5, loaded=0, compiled=2),
        ],
    )
    _write_events(
        tmp_path / "runs" / "r" / "runner-1.jsonl",
        [
            warm("process_start", 1.0),
            warm("precompiled.load", 4.0, 6.5, module="UNet", signature=shape_b),
            warm("precompiled.load", 6.5, 7.0, module="UNet", signature=shape_a),
            warm("compile_cache.compile", 3.0, 8.0, hit=True, dynamo_s=0.0),
            warm("precompiled", 2.0, 9.0, key="k", dynamo_s=0.0, loaded=2, compiled=0),
        ],
    )
    run = load_run(tmp_path)
    rows = report_rows(run)

    assert [row.dynamo_s for row in rows] == [11.5, 0.0]
    assert [(g.how, g.signature, g.seconds) for g in rows[1].graphs] == [
        ("loaded", shape_b, 2.5),
        ("loaded", shape_a, 0.5),
    ]
    text = format_graphs(rows)
    assert "runner-0 11.50 s, runner-1 0.00 s" in text
    assert f"compiled   40.00 s (Dynamo 6.50 s)  UNet {shape_a}" in text
    assert f"failed      1.00 s  VAE {shape_a}" in text  # its phase ended with an error
    runners = report_json(run, rows)["runners"]
    assert runners[0]["graphs"][1] == {
        "module": "UNet",
        "signature": shape_b,
        "how": "compiled",
        "seconds": 30.0,
        "dynamo_s": 5.0,
    }


@pytest.mark.unit
def test_an_event_may_carry_any_detail_name(tmp_path: Path) -> None:
    from minifal.startup.events import read_events, record_for

    file = tmp_path / "runner-0.jsonl"
    record_for(file, "runner-0", 42, "first_request", 1.0, 2.0, path="/", phase="x", start=0)
    record_for(file, "runner-0", 42, "suspend", 3.0, 9.3, rss=123)
    events = read_events(file, 42)
    assert [e["phase"] for e in events] == ["first_request", "suspend"]
    assert events[0]["details"] == {"path": "/", "phase": "x", "start": 0}
    assert events[1]["duration_s"] == 6.3 and events[1]["runner_id"] == "runner-0"
