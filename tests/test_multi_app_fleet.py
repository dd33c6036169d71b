"""Two apps behind one gateway, as a user runs them: ``minifal run A B`` (real gateway, real
runner processes). Each app answers at fal's ``/<owner>/<app>/`` path, has fal's queue protocol
of its own, is reached by ``fal_client`` with its app id, and ``/runners`` (and ``minifal
runners``' table) shows the app of each runner; ``minifal deploy`` rolls out a new revision of
one app while the other serves on. Routing in depth, in process: test_multi_app_routes.py and
test_multi_app_deploys.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import clean_env, minifal_command
from fleet_support import Fleet, fal_client_of, poll_until, start_fleet

from minifal.cli.runners_table import format_runners

pytestmark = pytest.mark.process

APPS_FILE = Path(__file__).parent / "apps" / "two_apps.py"
READY_TIMEOUT_S = 90.0
DEPLOY_TIMEOUT_S = 120.0


def wait_for_a_runner_of_each_app(client: httpx.Client, fleet: Fleet) -> None:
    poll_until(
        lambda: client.get("/health").json()["runners_ready"] == 2,
        READY_TIMEOUT_S,
        "a ready runner of each app",
        fleet,
    )


def test_two_apps_one_gateway_each_at_its_path_with_its_queue(tmp_path: Path) -> None:
    apps = (f"{APPS_FILE}::FirstApp", f"{APPS_FILE}::SecondApp")
    with start_fleet(apps, tmp_path, workers=1) as fleet, fleet.client() as client:
        wait_for_a_runner_of_each_app(client, fleet)
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
    fork_server_logs = sorted(path.name for path in run_dirs[0].glob("*fork-server.log"))
    assert fork_server_logs == ["first-app-fork-server.log", "second-app-fork-server.log"]


def test_a_deploy_of_one_app_changes_its_answers_and_not_the_others(tmp_path: Path) -> None:
    """Both apps' answers change in the file; only the app deployed takes the change, the
    other app's runner serves on untouched."""
    app_file = tmp_path / "two_apps.py"
    shutil.copy(APPS_FILE, app_file)
    apps = (f"{app_file}::FirstApp", f"{app_file}::SecondApp")
    with start_fleet(apps, tmp_path, workers=1) as fleet, fleet.client() as client:
        wait_for_a_runner_of_each_app(client, fleet)
        app_file.write_text(
            app_file.read_text().replace('"first"', '"first v2"').replace('"second"', '"second v2"')
        )
        done = subprocess.run(
            minifal_command("deploy", f"{app_file}::FirstApp", "--url", fleet.base_url),
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=DEPLOY_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.search(r"revision r2-[0-9a-f]{8} of first-app: serving", done.stdout), done.stdout
        assert client.post("/local/first-app", json={}).json() == {"app": "first v2"}
        assert client.post("/local/second-app", json={}).json() == {"app": "second"}
        revisions = client.get("/_minifal/revisions").json()["apps"]
        assert [r["status"] for r in revisions["first-app"]["revisions"]] == ["retired", "serving"]
        assert [r["status"] for r in revisions["second-app"]["revisions"]] == ["serving"]

        def live() -> set[str]:
            rows = client.get("/runners").json()["runners"]
            return {row["runner_id"] for row in rows if row["state"] != "TERMINATED"}

        # first-app's old runner drains and stops; second-app's is the one it started with
        poll_until(
            lambda: live() == {"first-app-runner-1", "second-app-runner-0"},
            30,
            "first-app's old runner gone",
            fleet,
        )
