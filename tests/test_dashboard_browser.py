"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against
a real two-runner fleet of the SD-Turbo app (tiny random pipeline, eager): both runners appear
as IDLE, the timeline has one lane per runner, and a playground request renders its image and
shows its own log lines.
A screenshot is saved with the test's files (``dashboard.png`` in its tmp dir: ``pytest
--basetemp DIR`` keeps it where you want it). Skipped where Playwright or chromium is not
installed; `.ci/run` installs both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fleet_support import start_fleet

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed"),
]

APP = Path(__file__).resolve().parents[1] / "apps" / "sd_turbo.py"
TIMEOUT_MS = 120_000


def test_runners_timeline_and_playground_in_a_browser(tmp_path: Path) -> None:
    env = {"MINIFAL_SD_COMPILE": "none", "MINIFAL_SD_WEIGHTS": "random-tiny"}
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
