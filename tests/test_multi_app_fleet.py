"""Two apps behind one gateway, as a user runs them: ``minifal run A B`` (real gateway, real
runner processes). Each app answers at fal's ``/<owner>/<app>/`` path, has fal's queue protocol
of its own, is reached by ``fal_client`` with its app id, and ``/runners`` (and ``minifal
runners``' table) shows the app of each runner. Routing in depth, in process:
test_multi_app_routes.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleet_support import fal_client_of, poll_until, start_fleet

from minifal.cli.runners_table import format_runners

pytestmark = pytest.mark.process

APPS_FILE = Path(__file__).parent / "apps" / "two_apps.py"
READY_TIMEOUT_S = 90.0


def test_two_apps_one_gateway_each_at_its_path_with_its_queue(tmp_path: Path) -> None:
    apps = (f"{APPS_FILE}::FirstApp", f"{APPS_FILE}::SecondApp")
    with start_fleet(apps, tmp_path, workers=1) as fleet, fleet.client() as client:
        poll_until(
            lambda: client.get("/health").json()["runners_ready"] == 2,
            READY_TIMEOUT_S,
            "a ready runner of each app",
            fleet,
        )
        # sync calls, each app at its own path
        assert client.post("/local/first-app", json={}).json() == {"app": "first"}
        assert client.post("/someone/second-app/", json={}).json() == {"app": "second"}

        # fal's queue protocol, per app
        submitted = client.post("/queue/local/second-app", json={}).json()
        assert "/queue/local/second-app/requests/" in submitted["status_url"]
        poll_until(
            lambda: client.get(submitted["status_url"]).json()["status"] == "COMPLETED",
            30,
            "the queued request",
            fleet,
        )
        assert client.get(submitted["response_url"]).json() == {"app": "second"}

        # fal's client, with each app's id
        with fal_client_of(fleet) as fal:
            assert fal.run("local/first-app", arguments={}) == {"app": "first"}
            assert fal.submit("local/second-app", arguments={}).get() == {"app": "second"}

        table = client.get("/runners").json()
        runners = {row["runner_id"]: row["alias"] for row in table["runners"]}
        assert runners == {"first-app-runner-0": "first-app", "second-app-runner-0": "second-app"}
        text = format_runners(table)
        assert text.startswith("apps first-app, second-app, run ")
        assert "second-app-runner-0" in text

    run_dirs = list((fleet.data_dir / "runs").iterdir())
    run = json.loads((run_dirs[0] / "run.json").read_text())
    assert [app["app"] for app in run["apps"]] == ["first-app", "second-app"]
    queues = fleet.data_dir / "queue" / "apps"
    assert sorted(path.name for path in queues.iterdir()) == ["first-app", "second-app"]
