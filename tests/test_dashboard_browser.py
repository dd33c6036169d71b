"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against
a real two-runner fleet of the SD-Turbo app (tiny random pipeline, eager): both runners appear
as IDLE, the timeline has one lane per runner, an earlier run's phase still in progress is drawn
up to now with its last time, and a playground request renders its image and shows its own log
lines.
A screenshot is saved with the test's files (``dashboard.png`` in its tmp dir: ``pytest
--basetemp DIR`` keeps it where you want it). Skipped where Playwright or chromium is not
installed; `.ci/run` installs both."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from fleet_support import start_fleet

from minifal.host.processes import process_started_at

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed"),
]

APP = Path(__file__).resolve().parents[1] / "apps" / "sd_turbo.py"
TIMEOUT_MS = 120_000
IN_PROGRESS_RUN = "20000101-000000-in-progress"


def _write_run_in_progress(data_dir: Path) -> None:
    """A run whose runner is this test's process (it runs): its compile began a second after
    the process; an earlier run's same compile took 100 s."""
    now, pid = time.time(), os.getpid()
    origin = process_started_at(pid)
    common = {"runner_id": "runner-0", "pid": pid, "details": {"key": "demo", "hit": False}}
    earlier = data_dir / "runs" / "19990101-000000-finished" / "runner-0.jsonl"
    earlier.parent.mkdir(parents=True)
    ended = {"phase": "compile_cache.compile", "start": now - 500, "end": now - 400}
    earlier.write_text(json.dumps({**common, **ended, "pid": 1}) + "\n")
    running = data_dir / "runs" / IN_PROGRESS_RUN / "runner-0.jsonl"
    running.parent.mkdir(parents=True)
    started = {"phase": "process_start", "start": origin, "details": {}}
    begun = {"kind": "start", "phase": "compile_cache.compile", "start": origin + 1, "span": "1"}
    running.write_text(json.dumps({**common, **started}) + "\n" + json.dumps({**common, **begun}))


def test_runners_timeline_and_playground_in_a_browser(tmp_path: Path) -> None:
    env = {"MINIFAL_SD_COMPILE": "none", "MINIFAL_SD_WEIGHTS": "random-tiny"}
    _write_run_in_progress(tmp_path / "data")
    with (
        start_fleet(APP, tmp_path, workers=2, env=env) as fleet,
        playwright_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(fleet.url("dashboard"))
            # runners, live
            idle = page.locator("#runners tr.runner .state-IDLE")
            idle.nth(1).wait_for()
            assert idle.count() == 2
            page.locator('#runners tr.runner[data-runner="runner-0"]').click()
            assert "IDLE" in page.locator("#runners tr.history").inner_text()
            # the startup timeline of this run: one lane per runner
            lanes = page.locator("#timelines .timeline svg g.lane")
            lanes.nth(1).wait_for()
            assert lanes.count() == 2
            assert page.locator("#timelines rect.phase-setup").count() == 2
            # beside it, a run whose compile is in progress: a bar up to now, its last time
            page.select_option("#run-b", IN_PROGRESS_RUN)
            growing = page.locator(f'.timeline[data-run="{IN_PROGRESS_RUN}"] rect.in-progress')
            growing.wait_for()
            assert "compiling demo: " in growing.locator("title").text_content()
            assert "last time 100.0 s" in growing.locator("title").text_content()
            assert page.locator(f'.timeline[data-run="{IN_PROGRESS_RUN}"] rect.last-time').count()
            # the playground: the form from the OpenAPI schema, through the queue
            form = page.locator('form.endpoint[data-path="/"]')
            form.locator('[name="prompt"]').fill("a fox in the snow")
            form.locator('[name="seed"]').fill("7")
            form.locator('button[type="submit"]').click()
            image = form.locator(".result img")
            image.wait_for()
            assert page.evaluate("(img) => img.naturalWidth", image.element_handle()) == 512
            assert "COMPLETED" in form.locator(".status").inner_text()
            # the request's own log lines, beside its result (its status with ?logs=1)
            logs = form.locator("pre.logs")
            assert "INFO 512x512, seed 7:" in logs.inner_text()
            assert "pipeline:" not in logs.inner_text()  # setup()'s line: the runner's, not its
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            # a 422 lands next to its field
            form.locator('[name="width"]').fill("104")
            form.locator('button[type="submit"]').click()
            error = form.locator('.error[data-field="width"]')
            page.wait_for_function(
                "(node) => node.textContent.length > 0", arg=error.element_handle()
            )
            assert "greater than or equal" in error.inner_text()
        finally:
            browser.close()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
