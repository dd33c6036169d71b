"""``/dashboard``: the gateway's web page. Runners live, startup timelines side by side, a
playground for each endpoint.

The page is three static files (``dashboard_static/``: HTML, JS, CSS; no build step, no CDN)
that read what the gateway already serves: ``/runners``, ``/openapi.json`` and the queue. Two
routes here add the data dir's runs (their startup reports as JSON, with the PNG timeline's
colours and the phases in progress). With an auth key, ``/dashboard?key=K`` stores the key in a
same-site, HTTP-only cookie that the auth middleware accepts, so that a browser can open the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from minifal.fleet.auth import KEY_COOKIE
from minifal.startup.progress import HISTORY_RUNS, run_in_progress
from minifal.startup.report import report_json, report_rows
from minifal.startup.runs import (
    RUNS_DIRNAME,
    Run,
    RunnerStart,
    RunNotFoundError,
    load_run,
    recent_runs,
    running_here,
)
from minifal.startup.timeline import OTHER_COLOURS, PHASE_COLOURS

STATIC_DIR = Path(__file__).parent / "dashboard_static"
STATIC_FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
RUNS_LISTED = 50


def hex_colour(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def list_runs(data_dir: Path, current: str) -> list[dict[str, Any]]:
    """The data dir's runs, newest first: id, when last written, runner files, current or not."""
    runs_dir = data_dir / RUNS_DIRNAME
    runs = []
    for path in runs_dir.iterdir() if runs_dir.is_dir() else ():
        files = list(path.glob("*.jsonl")) if path.is_dir() else []
        if not files:
            continue
        written = max(file.stat().st_mtime for file in files)
        runs.append(
            {
                "run_id": path.name,
                "written_at": written,
                "runners": len(files),
                "current": path.name == current,
            }
        )
    runs.sort(key=lambda run: run["written_at"], reverse=True)
    return runs[:RUNS_LISTED]


def run_report(
    data_dir: Path,
    run_id: str,
    running: Callable[[RunnerStart], bool] = running_here,
    earlier: Callable[[str], list[Run]] | None = None,
    now: float | None = None,
) -> dict[str, Any] | None:
    """``minifal startup-report --json`` of one run, with the timeline's colours; ``running``
    says whose process still runs, ``earlier(run_id)`` gives the runs before it (for "last
    time"; by default read now)."""
    try:
        run = load_run(data_dir, run_id)
    except RunNotFoundError:
        return None
    runs_dir = data_dir / RUNS_DIRNAME
    before = earlier or (lambda current: recent_runs(runs_dir, HISTORY_RUNS, but=current))
    in_progress = run_in_progress(run, running, lambda: before(run.run_id))
    report = report_json(run, report_rows(run, in_progress), time.time() if now is None else now)
    report["colours"] = {name: hex_colour(colour) for name, colour in PHASE_COLOURS.items()}
    report["other_colours"] = [hex_colour(colour) for colour in OTHER_COLOURS]
    return report


def running_in(
    run_id: str, current: str, live_pids: Callable[[], set[int]]
) -> Callable[[RunnerStart], bool]:
    """Whether a runner start of run ``run_id`` still runs: one of the gateway's live runners
    (``live_pids``, asked for the ``current`` run only: pids of other runs are other
    processes), or a process of this machine with that pid and start time."""
    live = live_pids() if run_id == current else set()
    return lambda start: start.pid in live or running_here(start)


class EarlierRuns:
    """The runs before a run, read once per run id: the page asks every two seconds, and
    finished runs do not change (a few run ids kept)."""

    KEPT = 4

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self._read: dict[str, list[Run]] = {}

    def __call__(self, run_id: str) -> list[Run]:
        if run_id not in self._read:
            if len(self._read) >= self.KEPT:
                self._read.pop(next(iter(self._read)))
            self._read[run_id] = recent_runs(self.runs_dir, HISTORY_RUNS, but=run_id)
        return self._read[run_id]


def dashboard_router(
    data_dir: Path, current_run: str, auth_key: str | None, live_pids: Callable[[], set[int]]
) -> APIRouter:
    """The page and its runs, of the gateway whose data dir, current run and auth key these are;
    ``live_pids``: its runner processes that have not exited (on any node)."""
    router = APIRouter(prefix="/dashboard")
    earlier = EarlierRuns(data_dir / RUNS_DIRNAME)

    @router.get("")
    async def page(request: Request) -> Response:
        key = request.query_params.get("key")
        if key and auth_key:  # the middleware checked it: keep it in a cookie
            redirect = RedirectResponse("/dashboard", status_code=303)
            redirect.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path="/")
            return redirect
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return JSONResponse({"detail": "Not found"}, 404)
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])

    @router.get("/api/runs")
    async def runs() -> dict[str, Any]:
        return {"current": current_run, "runs": list_runs(data_dir, current_run)}

    @router.get("/api/runs/{run_id}")
    async def run(run_id: str) -> Response:
        if "/" in run_id or run_id.startswith("."):
            return JSONResponse({"detail": "Not found"}, 404)
        running = running_in(run_id, current_run, live_pids)
        report = run_report(data_dir, run_id, running, earlier)
        if report is None:
            return JSONResponse({"detail": f"no run {run_id}"}, 404)
        return JSONResponse(report)

    return router
