"""``/dashboard`` served by a real fleet: the page and its files, the runs API (the startup
report as JSON, with the timeline's colours), and the key kept in a cookie when auth is on.
The page in a real browser: tests/test_dashboard_browser.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fleet_support import poll_until, start_fleet

pytestmark = pytest.mark.process

APP = Path(__file__).parent / "apps_fleet" / "fleet_app.py"


def test_the_page_its_files_and_the_runs_of_the_data_dir(tmp_path: Path) -> None:
    with start_fleet(APP, tmp_path, workers=2) as fleet, fleet.client() as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "/dashboard/static/dashboard.js" in page.text
        script = client.get("/dashboard/static/dashboard.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert client.get("/dashboard/static/dashboard.css").status_code == 200
        assert client.get("/dashboard/static/%2e%2e%2fdashboard.py").status_code in (404, 405)
        assert client.get("/dashboard/static/secrets.txt").status_code == 404
        runs = client.get("/dashboard/api/runs").json()
        current = runs["current"]
        assert [run["run_id"] for run in runs["runs"] if run["current"]] == [current]
        report = poll_until(
            lambda: (
                (r := client.get(f"/dashboard/api/runs/{current}").json())
                and len(r["runners"]) == 2
                and all(row["ready_at_s"] for row in r["runners"])
                and r
            ),
            60,
            "a report with both runners ready",
            fleet,
        )
        assert {row["runner_id"] for row in report["runners"]} == {"runner-0", "runner-1"}
        assert report["colours"]["ready"].startswith("#") and report["other_colours"]
        assert client.get("/dashboard/api/runs/no-such-run").status_code == 404


def test_with_auth_the_key_comes_once_in_the_url_then_in_a_cookie(tmp_path: Path) -> None:
    key = "s3cret-key"
    with start_fleet(APP, tmp_path, workers=1, extra_args=("--auth-key", key)) as fleet:
        with httpx.Client(base_url=fleet.base_url, timeout=30.0, follow_redirects=True) as browser:
            assert browser.get("/dashboard").status_code == 401
            assert browser.get("/dashboard?key=wrong").status_code == 401
            opened = browser.get(f"/dashboard?key={key}")  # follows the redirect
            assert opened.status_code == 200 and opened.history[0].status_code == 303
            cookie = opened.history[0].headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert browser.get("/runners").status_code == 200  # the cookie is the key
        with httpx.Client(base_url=fleet.base_url, timeout=30.0) as stranger:
            assert stranger.get(f"/runners?key={key}").status_code == 401  # only /dashboard
