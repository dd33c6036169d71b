"""New revisions of a running fleet's app, with real processes: ``minifal deploy`` (rolling and
recreate) under constant load, a revision whose ``setup()`` raises, and ``minifal run --watch``.

The load: a few clients, sync and queue calls alternating, each sending its next call when the
last one is answered (``revision_load.py``); every answer names the revision that served it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import clean_env, minifal_command
from fleet_support import Fleet, poll_until, start_fleet
from revision_load import Answer, Load, last_old_send, summary

pytestmark = pytest.mark.process

APP = Path(__file__).parent / "apps_revisions" / "revision_app.py"
CLIENTS = 8
WAIT_S = 60.0
DEPLOY_TIMEOUT_S = 120.0


def copy_app(tmp_path: Path) -> Path:
    app = tmp_path / "revision_app.py"
    shutil.copy(APP, app)
    return app


def revise(app: Path, revision: str, setup_fails: bool = False) -> None:
    text = re.sub(r'^REVISION = ".*"$', f'REVISION = "{revision}"', app.read_text(), flags=re.M)
    text = re.sub(r"^SETUP_FAILS = .*$", f"SETUP_FAILS = {setup_fails}", text, flags=re.M)
    app.write_text(text)


def deploy(fleet: Fleet, app: Path, strategy: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        minifal_command("deploy", str(app), "--url", fleet.base_url, "--strategy", strategy),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=DEPLOY_TIMEOUT_S,
    )


def answered_since(load: Load, since: float, count: int, fleet: Fleet) -> None:
    poll_until(
        lambda: sum(1 for a in list(load.answers) if a.sent_at > since) >= count,
        WAIT_S,
        f"{count} answers to calls sent after {since}",
        fleet,
    )


def assert_every_call_answered_once(answers: list[Answer], sent: int) -> dict[str, object]:
    result = summary(answers, sent)
    assert result["lost"] == 0 and result["failed"] == 0, result["failures"]
    assert len({answer.tag for answer in answers}) == len(answers) == sent
    return result


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def revisions_of(fleet: Fleet) -> dict[str, object]:
    with fleet.client() as client:
        return client.get("/runners").json()["revisions"]


def test_a_rolling_revision_under_load_fails_no_call_and_takes_all_traffic(
    tmp_path: Path,
) -> None:
    app = copy_app(tmp_path)
    with start_fleet(app, tmp_path, workers=2) as fleet:
        load = Load(fleet.base_url, CLIENTS).start()
        answered_since(load, 0.0, 40, fleet)
        revise(app, "v2")
        deployed_at = time.time()
        done = deploy(fleet, app, "rolling")
        serving_at = time.time()
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.search(r"revision r2-[0-9a-f]{8}: serving", done.stdout), done.stdout
        answered_since(load, serving_at, 40, fleet)
        answers = load.stop()
        runners = fleet.runners()
        log = fleet.log()
        forked = [
            "minifal.runner.fork_server" in command_line(parent_pid(r["pid"]))
            for r in runners
            if r["state"] != "TERMINATED"
        ]

    result = assert_every_call_answered_once(answers, load.sent)
    assert set(result["by_revision"]) == {"v1", "v2"}  # type: ignore[arg-type]
    assert all(a.revision == "v2" for a in answers if a.sent_at > serving_at)
    live = [r for r in runners if r["state"] != "TERMINATED"]
    assert len(live) == 2 and all(r["revision"].startswith("r2-") for r in live)
    assert forked == [True, True]  # warm, as any runner of the fleet: from its fork server
    old = [r for r in runners if r["revision"].startswith("r1-")]
    assert len(old) == 2 and all(r["state"] == "TERMINATED" for r in old)
    rolled = re.search(r"revision r2-\w+ serves \(rolled out in ([\d.]+) s\)", log)
    assert rolled is not None, log[-3000:]
    last_old = last_old_send(answers, "v1", deployed_at)
    print(
        f"rolling revision under {CLIENTS} clients: {result['answered']} calls "
        f"({result['sync']} sync, {result['queue']} queue), 0 failed, 0 lost; "
        f"deploy command {serving_at - deployed_at:.2f} s, gateway rollout {rolled[1]} s, "
        f"last call sent to v1 {last_old if last_old is None else round(last_old, 2)} s "
        f"after the deploy began; by revision {result['by_revision']}"
    )


def test_a_revision_whose_setup_fails_never_serves_then_recreate_replaces_the_old_one(
    tmp_path: Path,
) -> None:
    app = copy_app(tmp_path)
    with start_fleet(app, tmp_path, workers=2) as fleet:
        load = Load(fleet.base_url, CLIENTS).start()
        answered_since(load, 0.0, 20, fleet)
        revise(app, "broken", setup_fails=True)
        failed = deploy(fleet, app, "rolling")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert re.search(r"r2-\w+: failed \(runner-\d+: setup\(\) failed", failed.stdout)
        failed_at = time.time()
        answered_since(load, failed_at, 20, fleet)  # the old revision serves on
        revisions = revisions_of(fleet)
        assert revisions["serving"].startswith("r1-")  # type: ignore[index]
        broken = revisions["revisions"][1]  # type: ignore[index]
        assert broken["status"] == "failed" and "setup() failed" in broken["reason"]

        # Recreate: the old runners are gone before the broken ones fail; the old revision
        # comes back from its own copy of the app file (the file itself is broken now).
        failed = deploy(fleet, app, "recreate")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert re.search(r"r3-\w+: failed \(runner-\d+: setup\(\) failed", failed.stdout)
        answered_since(load, time.time(), 20, fleet)

        revise(app, "v3")
        done = deploy(fleet, app, "recreate")
        serving_at = time.time()
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.search(r"revision r4-\w+: serving", done.stdout), done.stdout
        answered_since(load, serving_at, 20, fleet)
        answers = load.stop()
        runners = fleet.runners()
        log = fleet.log()

    result = assert_every_call_answered_once(answers, load.sent)
    assert set(result["by_revision"]) == {"v1", "v3"}  # type: ignore[arg-type]
    assert all(a.revision == "v3" for a in answers if a.sent_at > serving_at)
    for broken in ("r2-", "r3-"):
        tried = [r for r in runners if r["revision"].startswith(broken)]
        assert len(tried) == 2, runners  # one start each: not retried
        assert all(r["state"] == "TERMINATED" for r in tried), tried
        # The first to fail fails the revision; the other may be stopped before it fails.
        reasons = [r["last_exit_reason"] or "" for r in tried]
        assert any("setup() failed" in reason for reason in reasons), reasons
        assert all("setup() failed" in why or f"{broken}" in why for why in reasons), reasons
    assert re.search(r"revision r2-\w+ failed .* r1-\w+ keeps serving", log), log[-3000:]


def test_run_watch_deploys_a_revision_when_the_app_file_changes(tmp_path: Path) -> None:
    app = copy_app(tmp_path)
    with start_fleet(app, tmp_path, workers=1, extra_args=("--watch",)) as fleet:
        revise(app, "v2")

        def answer() -> str:
            with httpx.Client(base_url=fleet.base_url, timeout=30) as client:
                return client.post("/", json={}).json()["revision"]

        poll_until(lambda: answer() == "v2", WAIT_S, "the watched change to serve", fleet)
        revise(app, "v3", setup_fails=True)
        poll_until(
            lambda: revisions_of(fleet)["revisions"][-1]["status"] == "failed",  # type: ignore[index]
            WAIT_S,
            "the broken change to fail",
            fleet,
        )
        assert answer() == "v2"
        assert "--watch: a change of" in fleet.log()
