"""A rollout over a fake backend, in milliseconds: the supervisor's drain and trial runners, and
the deployer stepping a rolling or recreate rollout to promotion or failure.

The manifest of a new revision is computed in a child process by ``inspect_app``; here it is
replaced by a function returning a manifest (the process tests run the real one)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fleet_fakes import FakeBackend, supervisor, until

from minifal.fleet import deployer as deployer_module
from minifal.fleet.admin_api import build_admin_app
from minifal.fleet.backends.base import RunnerRevision
from minifal.fleet.deployer import Deployer, DeployRejected
from minifal.fleet.revisions import RevisionStatus, Strategy
from minifal.fleet.runner import RunnerState
from minifal.fleet.supervisor import Supervisor
from minifal.host import envs
from minifal.runner.app_loader import load_app_class
from minifal.runner.app_manifest import AppManifest, ManifestEndpoint, ManifestError
from minifal.settings import AppSettings

pytestmark = pytest.mark.unit

REVISION = RunnerRevision("r2-bbbbbbbb", "/apps/v2.py")


def manifest(name: str = "echo") -> AppManifest:
    return AppManifest(name, "Echo", AppSettings(), (ManifestEndpoint("/", "http"),), {})


# -- the supervisor --------------------------------------------------------------------------------


def test_a_runner_starts_with_its_revision() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner(REVISION)
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        assert backend.instances[0].revision == REVISION and runner.revision_id == "r2-bbbbbbbb"
        await fleet.stop()

    asyncio.run(scenario())


def test_drain_sends_no_new_request_and_stops_the_runner_once_it_holds_none() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend, grace_seconds=30.0)
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        runner.took_request(1.0)
        fleet.drain(runner, "revision r2 replaces it")
        assert runner.state is RunnerState.DRAINING and not runner.accepts_requests
        await asyncio.sleep(0.2)  # the drain polls: it must still wait for the request
        assert not backend.instances[0].terminated
        runner.finished_request(2.0)
        await until(lambda: runner.state is RunnerState.TERMINATED, "TERMINATED")
        assert backend.instances[0].terminated and len(backend.instances) == 1
        assert runner.last_exit_reason == "revision r2 replaces it"
        await fleet.stop()

    asyncio.run(scenario())


def test_a_trial_runner_whose_setup_fails_ends_without_a_retry() -> None:
    async def scenario() -> None:
        backend = FakeBackend(ready_at_once=False)
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner(REVISION, trial=True)
        await until(lambda: len(backend.instances) == 1, "the start")
        backend.instances[0].exit(3)  # EXIT_SETUP_FAILED
        await until(lambda: runner.state is RunnerState.TERMINATED, "TERMINATED")
        assert runner.trial_failure == "setup() failed (traceback in the runner's log)"
        await asyncio.sleep(0.05)  # back-off steps are 10 ms here: a retry would have come
        assert len(backend.instances) == 1
        await fleet.stop()

    asyncio.run(scenario())


def test_a_trial_runner_that_was_ready_once_restarts_after_a_crash_like_any_other() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend)
        runner = fleet.add_runner(REVISION, trial=True)
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        backend.instances[0].exit(-9)
        await until(lambda: len(backend.instances) == 2, "the restart")
        assert runner.trial_failure is None
        await fleet.stop()

    asyncio.run(scenario())


def test_a_runner_drained_in_its_failure_delay_ends_without_waiting_for_it() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend)
        fleet.backoff_step = 600.0
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        backend.instances[0].exit(-9)
        await until(lambda: runner.state is RunnerState.FAILURE_DELAY, "FAILURE_DELAY")
        fleet.drain(runner, "revision r2 replaces it")
        await until(lambda: runner.state is RunnerState.TERMINATED, "TERMINATED", timeout=5.0)
        await fleet.stop()

    asyncio.run(scenario())


# -- a revision's copy of the app file ----------------------------------------------------------


def test_a_runner_imports_its_revisions_copy_of_the_app_file_under_the_files_own_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "copied_app.py"
    template = "import fal\n\nclass Copied(fal.App):\n    label = {label!r}\n"
    app.write_text(template.format(label="edited since"))
    kept = tmp_path / "run" / "revisions" / "abc" / "copied_app.py"
    kept.parent.mkdir(parents=True)
    kept.write_text(template.format(label="deployed"))
    monkeypatch.setenv(envs.APP_SOURCE.name, str(kept))
    monkeypatch.setattr(sys, "path", list(sys.path))

    app_class = load_app_class(str(app))
    module = sys.modules.pop(app_class.__module__)

    assert app_class.label == "deployed"  # type: ignore[attr-defined]
    assert module.__file__ == str(app.resolve())
    assert sys.path[0] == str(tmp_path.resolve())


# -- the deployer ----------------------------------------------------------------------------------


def deployer_for(
    app: Path, fleet: Supervisor, capacity: int | None = None
) -> tuple[Deployer, list[AppManifest]]:
    promoted: list[AppManifest] = []
    deployer = Deployer(fleet, manifest(), str(app), app.parent / "data", capacity, promoted.append)
    return deployer, promoted


@pytest.fixture
def app_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    def inspect(reference: str, source: str | None = None) -> AppManifest:
        assert source is not None and Path(source).parent.parent == tmp_path / "data/app-revisions"
        text = Path(source).read_text()
        if "raise" in text:
            raise ManifestError("SyntaxError: invalid syntax")
        return manifest("other" if "other" in text else "echo")

    monkeypatch.setattr(deployer_module, "inspect_app", inspect)
    path = tmp_path / "echo_app.py"
    path.write_text("v1")
    return path


async def step_until(
    deployer: Deployer, wanted: int, condition: Callable[[], bool], what: str
) -> None:
    """What the gateway's scaling loop does (``step`` 4x a second), every 2 ms."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        deployer.step(wanted)
        await asyncio.sleep(0.002)


def test_rolling_new_runners_take_over_old_ones_drain_and_the_revision_serves(
    app_file: Path,
) -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend)
        deployer, promoted = deployer_for(app_file, fleet)
        old = [fleet.add_runner(deployer.runner_revision()) for _ in range(2)]
        await until(lambda: all(r.state is RunnerState.IDLE for r in old), "old IDLE")
        app_file.write_text("v2")
        revision = await deployer.deploy(None, Strategy.ROLLING)
        assert revision.revision_id.startswith("r2-") and deployer.rolling_out
        await step_until(deployer, 2, lambda: not deployer.rolling_out, "promotion")
        assert revision.status is RevisionStatus.SERVING and promoted == [manifest()]
        assert deployer.revisions[0].status is RevisionStatus.RETIRED
        await until(lambda: all(r.state is RunnerState.TERMINATED for r in old), "old gone")
        new = [r for r in fleet.live_runners if r.revision_id == revision.revision_id]
        assert len(new) == 2 and all(r.accepts_requests and not r.trial for r in new)
        assert deployer.runner_revision().revision_id == revision.revision_id
        app_file.write_text("v3, not deployed")
        kept = backend.instances[-1].revision.source  # type: ignore[union-attr]
        assert kept is not None and Path(kept).read_text() == "v2"
        await fleet.stop()

    asyncio.run(scenario())


def test_rolling_on_a_full_gpu_machine_never_puts_two_runners_on_one_gpu(app_file: Path) -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend, gpus=["0", "1"])
        deployer, _ = deployer_for(app_file, fleet, capacity=None)
        old = [fleet.add_runner(deployer.runner_revision()) for _ in range(2)]
        await until(lambda: all(r.accepts_requests for r in old), "old ready")
        app_file.write_text("v2")
        revision = await deployer.deploy(None, Strategy.ROLLING)
        most_users = 0

        def promoted() -> bool:
            nonlocal most_users
            most_users = max(most_users, *fleet.gpu_pool.users.values())
            return not deployer.rolling_out

        await step_until(deployer, 2, promoted, "promotion")
        assert revision.status is RevisionStatus.SERVING and most_users == 1
        new = [r for r in fleet.live_runners if r.revision_id == revision.revision_id]
        assert sorted(gpu for r in new for gpu in r.gpus) == ["0", "1"]
        await fleet.stop()

    asyncio.run(scenario())


def test_a_revision_whose_setup_fails_is_marked_failed_and_the_old_one_serves_on(
    app_file: Path,
) -> None:
    async def scenario() -> None:
        backend = FakeBackend(ready_at_once=False)
        fleet, _ = supervisor(backend)
        deployer, promoted = deployer_for(app_file, fleet)
        old = fleet.add_runner(deployer.runner_revision())
        await until(lambda: len(backend.instances) == 1, "old started")
        backend.instances[0].become_ready()
        await until(lambda: old.accepts_requests, "old ready")
        app_file.write_text("v2: setup fails")
        revision = await deployer.deploy(None, Strategy.ROLLING)
        deployer.step(1)
        await until(lambda: len(backend.instances) == 2, "the new runner")
        backend.instances[1].exit(3)
        await step_until(deployer, 1, lambda: not deployer.rolling_out, "the failure")
        assert revision.status is RevisionStatus.FAILED and promoted == []
        assert revision.reason and "setup() failed" in revision.reason
        assert deployer.serving.number == 1 and old.accepts_requests
        for _ in range(20):  # not retried
            deployer.step(1)
            await asyncio.sleep(0.002)
        assert len(backend.instances) == 2
        await fleet.stop()

    asyncio.run(scenario())


def test_recreate_stops_the_old_runners_before_the_new_ones_start(app_file: Path) -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        fleet, _ = supervisor(backend, grace_seconds=30.0)  # the drain waits for the request
        deployer, _ = deployer_for(app_file, fleet)
        old = fleet.add_runner(deployer.runner_revision())
        await until(lambda: old.accepts_requests, "old ready")
        old.took_request(1.0)
        app_file.write_text("v2")
        revision = await deployer.deploy(None, Strategy.RECREATE)
        for _ in range(20):
            deployer.step(1)
            await asyncio.sleep(0.002)
        assert old.state is RunnerState.DRAINING and len(backend.instances) == 1
        old.finished_request(2.0)
        await step_until(deployer, 1, lambda: not deployer.rolling_out, "promotion")
        assert revision.status is RevisionStatus.SERVING and len(backend.instances) == 2
        await fleet.stop()

    asyncio.run(scenario())


def test_a_deploy_is_refused_when_the_app_does_not_load_or_changed_incompatibly(
    app_file: Path,
) -> None:
    async def scenario() -> None:
        fleet, _ = supervisor(FakeBackend())
        deployer, _ = deployer_for(app_file, fleet)
        assert (await deployer.deploy(None, Strategy.ROLLING)) is deployer.serving  # unchanged
        app_file.write_text("raise")
        with pytest.raises(DeployRejected) as refused:
            await deployer.deploy(None, Strategy.ROLLING)
        assert refused.value.status == 422
        assert refused.value.problems == ("SyntaxError: invalid syntax",)
        app_file.write_text("other")
        with pytest.raises(DeployRejected) as refused:
            await deployer.deploy(None, Strategy.ROLLING)
        assert refused.value.status == 409
        assert refused.value.problems == ("app name changed: 'echo' -> 'other'",)
        app_file.write_text("v3")
        await deployer.deploy(None, Strategy.ROLLING)
        with pytest.raises(DeployRejected) as refused:
            await deployer.deploy(None, Strategy.ROLLING)
        assert refused.value.status == 409 and "is rolling out" in refused.value.detail
        assert [r.number for r in deployer.revisions] == [1, 2]
        await fleet.stop()

    asyncio.run(scenario())


# -- the routes ------------------------------------------------------------------------------------


def test_a_deploy_from_another_machine_needs_the_gateways_auth_key(app_file: Path) -> None:
    fleet, _ = supervisor(FakeBackend())
    deployer, _ = deployer_for(app_file, fleet)
    app_file.write_text("v2")
    # TestClient's peer is "testclient", not a loopback address.
    with TestClient(build_admin_app(deployer, auth_key_required=False)) as client:
        refused = client.post("/_minifal/deploy", json={"strategy": "rolling"})
        assert refused.status_code == 403 and "loopback" in refused.json()["detail"]
        assert client.post("/_minifal/deploy", json={"strategy": "blue"}).status_code == 422
    with TestClient(build_admin_app(deployer, auth_key_required=True)) as client:
        accepted = client.post("/_minifal/deploy", json={"strategy": "recreate"})
        assert accepted.status_code == 202, accepted.text
        revision = accepted.json()
        assert revision["revision"].startswith("r2-") and revision["status"] == "deploying"
        assert client.get("/_minifal/revisions").json()["rollout"] == revision["revision"]
        one = client.get(f"/_minifal/revisions/{revision['revision']}").json()
        assert one == {key: value for key, value in revision.items() if key != "unchanged"}
        assert client.get("/_minifal/revisions/r9-nothing").status_code == 404


def test_a_suspended_runner_drained_for_a_new_revision_is_stopped_without_teardown() -> None:
    async def scenario() -> None:
        backend = FakeBackend(obeys_terminate=False)
        fleet, _ = supervisor(backend, grace_seconds=30.0, suspender=InstantSuspender())
        runner = fleet.add_runner()
        await until(lambda: runner.state is RunnerState.IDLE, "IDLE")
        assert fleet.suspend(runner)
        await until(lambda: runner.state is RunnerState.SUSPENDED, "SUSPENDED")
        fleet.drain(runner, "revision r2 replaces it")
        await until(lambda: runner.state is RunnerState.TERMINATED, "TERMINATED")
        assert backend.instances[0].killed and len(backend.instances) == 1
        await fleet.stop()

    asyncio.run(scenario())


class InstantSuspender:
    def suspend(self, pid: int, lock_timeout_s: float) -> object:
        return None

    def resume(self, pid: int) -> object:
        return None
