"""Several apps behind one gateway, in process (``tests/in_process.py``): each app at fal's
``/<owner>/<app>/...`` paths with its own queue and OpenAPI, and the fleet's ``/health``,
``/runners``, ``/metrics`` and request logs over both, with the app of each runner. The same
through ``minifal run A B`` and ``fal_client``: test_multi_app_fleet.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from in_process import group_client, wait_for
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from word_apps import ReverseApp, UpperApp

from minifal.cli.main import build_parser
from minifal.cli.runners_table import format_runners
from minifal.compat.project import ProjectError, project_app_names
from minifal.fleet.gateway_group import GatewayGroup, app_in_path
from minifal.fleet.gpu_pool import AppGpus, GpuPool
from minifal.fleet.job_store.base import JobStore
from minifal.fleet.job_store.choice import job_store_for
from minifal.fleet.job_store.rules import Retention
from minifal.fleet.launcher import several_apps_problem
from minifal.fleet.runner import RunnerState
from minifal.fleet.scaler import ScalingSettings
from minifal.fleet.shared_gpu_pool import SharedGpuPool
from minifal.runner.app_manifest import AppManifest
from minifal.settings import AppSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[TestClient, GatewayGroup]]:
    with group_client([UpperApp(), ReverseApp()], tmp_path) as made:
        yield made


def path_of(url: str) -> str:
    return url.removeprefix("http://testserver")


def test_each_app_answers_at_its_own_path(fleet: tuple[TestClient, GatewayGroup]) -> None:
    client, _ = fleet
    assert client.post("/local/upper-app", json={"text": "ab"}).json() == {"text": "AB"}
    assert client.post("/someone/reverse-app/", json={"text": "ab"}).json() == {"text": "ba"}
    assert client.post("/local/reverse-app/twice", json={"text": "ab"}).json() == {"text": "abab"}
    missing = client.post("/local/upper-app/twice", json={"text": "ab"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "Path /twice not found"})


def test_a_path_that_names_no_app_is_404_naming_the_apps(
    fleet: tuple[TestClient, GatewayGroup],
) -> None:
    client, group = fleet
    for path in ("/", "/local/other-app", "/queue/local/other-app"):
        answer = client.post(path, json={"text": "x"})
        assert answer.status_code == 404, path
        assert "/<owner>/upper-app/, /<owner>/reverse-app/" in answer.json()["detail"]
    sent = [gateway.runner_client.sent for gateway in group.gateways.values()]  # type: ignore[attr-defined]
    assert sent == [[], []]


def test_each_app_has_its_own_queue(fleet: tuple[TestClient, GatewayGroup]) -> None:
    client, group = fleet
    upper = client.post("/queue/local/upper-app", json={"text": "q"}).json()
    reverse = client.post("/queue/local/reverse-app/twice", json={"text": "q"}).json()
    assert upper["status_url"].startswith("http://testserver/queue/local/upper-app/requests/")
    assert reverse["response_url"].startswith("http://testserver/queue/local/reverse-app/")
    for submitted, answer in ((upper, "Q"), (reverse, "qq")):
        wait_for(
            lambda s=submitted: (
                client.get(path_of(s["status_url"])).json()["status"] == "COMPLETED"
            ),
            "the queued request",
        )
        assert client.get(path_of(submitted["response_url"])).json() == {"text": answer}
    # a request id is found only under its own app
    other = upper["status_url"].replace("/upper-app/", "/reverse-app/")
    assert client.get(path_of(other)).status_code == 404
    assert list(group.gateways["upper-app"].forwarder.jobs) == [upper["request_id"]]
    logs = client.get(f"/requests/{reverse['request_id']}/logs")
    assert logs.status_code == 200 and logs.json()["request_id"] == reverse["request_id"]


def test_a_websocket_reaches_the_app_its_path_names(
    fleet: tuple[TestClient, GatewayGroup],
) -> None:
    """The app's own forwarder answers (``/`` is no websocket endpoint of it); a path that
    names no app is closed by the fleet. Websockets to runners: test_realtime_streams.py."""
    client, _ = fleet
    for path, reason in (
        ("/local/upper-app/", "Path / not found"),
        ("/local/other-app/", "Path /local/other-app/ names no app"),
    ):
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(path) as ws:
            ws.receive_text()
        assert (closed.value.code, closed.value.reason) == (4404, reason)


def test_each_app_has_its_own_openapi(fleet: tuple[TestClient, GatewayGroup]) -> None:
    client, _ = fleet
    upper = client.get("/local/upper-app/openapi.json").json()
    reverse = client.get("/local/reverse-app/openapi.json").json()
    assert set(upper["paths"]) == {"/"} and set(reverse["paths"]) == {"/", "/twice"}
    docs = client.get("/local/reverse-app/docs")
    assert docs.status_code == 200 and "/local/reverse-app/openapi.json" in docs.text
    assert client.get("/openapi.json").status_code == 404  # which app's? the path says


def test_runners_health_and_metrics_show_the_app_of_each_runner(
    fleet: tuple[TestClient, GatewayGroup],
) -> None:
    client, _ = fleet
    client.post("/local/upper-app", json={"text": "a"})
    table = client.get("/runners").json()
    rows = {(row["alias"], row["runner_id"]) for row in table["runners"]}
    assert rows == {("upper-app", "upper-app-runner-0"), ("reverse-app", "reverse-app-runner-0")}
    assert [app["app"] for app in table["apps"]] == ["upper-app", "reverse-app"]
    assert table["run_id"] == "in-process"
    text = format_runners(table)  # minifal runners
    assert text.startswith("apps upper-app, reverse-app, run in-process: 2 runner(s)")
    assert "upper-app runs in" in text and "reverse-app-runner-0" in text
    health = client.get("/health").json()
    assert health["runners_ready"] == 2 and set(health["apps"]) == {"upper-app", "reverse-app"}
    metrics = client.get("/metrics").text
    assert metrics.count("# TYPE fal_app_requests_received_total counter") == 1  # merged
    assert 'fal_app_requests_received_total{app="upper-app"} 1.0' in metrics
    assert 'fal_app_requests_received_total{app="reverse-app"} 0.0' in metrics
    assert 'fal_app_runners{app="reverse-app",state="IDLE"} 1.0' in metrics


def test_after_a_restart_each_app_answers_the_requests_its_store_kept(tmp_path: Path) -> None:
    """A durable queue per app: what one app accepted, the same app answers after a restart."""

    def stores(name: str) -> JobStore:
        return job_store_for("sqlite", tmp_path, Retention(), name)

    apps = [UpperApp(), ReverseApp()]
    with group_client(apps, tmp_path, runners=0, job_stores=stores) as (client, group):
        upper = client.post("/queue/local/upper-app", json={"text": "kept"}).json()
        reverse = client.post("/queue/local/reverse-app/twice", json={"text": "ab"}).json()
        group.begin_shutdown()  # no runner took them: they stay in each app's store
    with group_client(apps, tmp_path, runners=1, job_stores=stores) as (client, _):
        for submitted, answer in ((upper, "KEPT"), (reverse, "abab")):
            wait_for(
                lambda s=submitted: (
                    client.get(path_of(s["status_url"])).json()["status"] == "COMPLETED"
                ),
                "the kept request",
            )
            assert client.get(path_of(submitted["response_url"])).json() == {"text": answer}


class GpuUpperApp(UpperApp):
    machine_type = "GPU-H100"


class GpuReverseApp(ReverseApp):
    machine_type = "GPU-H100"


def test_two_apps_take_turns_on_one_gpu_behind_one_gateway(tmp_path: Path) -> None:
    """The group's pool arbitrates (``shared_gpu_pool``; its rules: test_gpu_arbiter.py): an
    app's request takes the GPU from the other app's idle runner, stopped here (suspension
    needs the CUDA driver: test_shared_gpu_pool.py with a fake one)."""
    scaling = ScalingSettings(min_concurrency=0, keep_alive=60.0, hard_cap=1)
    apps = [GpuUpperApp(), GpuReverseApp()]
    with group_client(apps, tmp_path, runners=0, gpus=["0"], scaling=scaling) as (client, group):
        upper, reverse = group.gateways["gpu-upper-app"], group.gateways["gpu-reverse-app"]
        assert client.post("/local/gpu-upper-app", json={"text": "a"}).json() == {"text": "A"}
        (first,) = upper.supervisor.runners
        assert first.gpus == ["0"]
        assert client.post("/local/gpu-reverse-app", json={"text": "ab"}).json() == {"text": "ba"}
        (second,) = reverse.supervisor.runners
        assert second.gpus == ["0"] and first.state is RunnerState.TERMINATED
        assert "GPU for gpu-reverse-app" in (first.last_exit_reason or "")
        assert client.post("/local/gpu-upper-app", json={"text": "b"}).json() == {"text": "B"}
        rows = client.get("/runners").json()["runners"]
        held = [row["runner_id"] for row in rows if row["state"] in ("IDLE", "RUNNING")]
        assert held == ["gpu-upper-app-runner-1"]  # one runner on the GPU at a time


def test_the_fleets_routes_win_over_an_app_path() -> None:
    assert app_in_path("/dashboard/api/runs") is None
    assert app_in_path("/files/x/y") is None
    assert app_in_path("/local/app/x") == app_in_path("/queue/local/app/requests/1") == "app"
    assert app_in_path("/") is None and app_in_path("/app") is None


def test_a_group_needs_two_apps_with_names_fit_for_a_path() -> None:
    with pytest.raises(ValueError, match="two apps or more"):
        GatewayGroup({}, "run", SharedGpuPool([]))


def test_apps_share_one_gpu_pool_each_with_its_own_count() -> None:
    pool = GpuPool(["0", "1", "2"], 0)
    big, small, cpu = AppGpus(pool, 2), AppGpus(pool, 1), AppGpus(pool, 0)
    assert big.acquire() == (["0", "1"], False)
    assert small.acquire() == (["2"], False)
    assert cpu.acquire() == ([], False)
    assert small.acquire() == (["0"], True)  # more runners than GPUs: shared, and said
    big.release(["0", "1"])
    assert pool.users == {"0": 1, "1": 0, "2": 1}


def test_each_app_has_its_own_part_of_the_job_store(tmp_path: Path) -> None:
    retention = Retention()
    single = job_store_for("sqlite", tmp_path, retention)
    one = job_store_for("sqlite", tmp_path, retention, "upper-app")
    other = job_store_for(f"sqlite://{tmp_path}/q", tmp_path, retention, "reverse-app")
    assert single.directory == tmp_path / "queue"  # type: ignore[attr-defined]
    assert one.directory == tmp_path / "queue" / "apps" / "upper-app"  # type: ignore[attr-defined]
    assert other.directory == tmp_path / "q" / "apps" / "reverse-app"  # type: ignore[attr-defined]
    redis = job_store_for("redis://127.0.0.1:1/0?prefix=mf:", tmp_path, retention, "upper-app")
    assert redis.prefix == "mf:upper-app:"  # type: ignore[attr-defined]


def test_a_project_without_app_arguments_serves_every_app(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.fal.apps.first]\nref = "a.py::A"\n\n[tool.fal.apps.second]\nref = "b.py::B"\n'
    )
    assert project_app_names(tmp_path) == ["first", "second"]
    (tmp_path / "pyproject.toml").write_text("[tool.fal]\n")
    with pytest.raises(ProjectError, match=r"no \[tool\.fal\.apps\.NAME\] table"):
        project_app_names(tmp_path)


def manifest_named(name: str) -> AppManifest:
    return AppManifest(name, "Cls", AppSettings(), (), {})


def test_several_apps_need_distinct_names_fit_for_a_path_and_no_ray() -> None:
    assert several_apps_problem([manifest_named("a"), manifest_named("b")], None) is None
    twice = several_apps_problem([manifest_named("a"), manifest_named("a")], None)
    assert twice is not None and twice.startswith("two apps are named a")
    spaced = several_apps_problem([manifest_named("a"), manifest_named("b c")], None)
    assert spaced is not None and "'b c'" in spaced
    on_ray = several_apps_problem([manifest_named("a"), manifest_named("b")], "auto")
    assert on_ray == "--ray serves one app per gateway for now"


def test_minifal_run_takes_several_apps_and_none_means_the_projects() -> None:
    assert build_parser().parse_args(["run", "a.py", "b.py::B", "--workers", "1"]).apps == [
        "a.py",
        "b.py::B",
    ]
    assert build_parser().parse_args(["run"]).apps == []
