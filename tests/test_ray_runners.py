"""``minifal run --ray``: runners as Ray actors on a real two-node Ray cluster, on this machine.

One cluster (``ray.cluster_utils.Cluster``: a head and a worker node, each its own raylet, all on
127.0.0.1) serves the whole module. The fleets are real ``minifal run`` subprocesses joined to it;
runners spread over both nodes, scale 0 -> 2 -> 0, and a node whose raylet is killed in the middle
of a burst of queued requests loses none of them. The node test runs last: it adds a new node
back for whatever follows. One compile of the SD-Turbo app across both nodes takes minutes on
this machine's CPU: ``benchmarks/ray_sd_turbo.py`` runs it (BENCHMARKS.md, section 7); the test
here compiles a small MLP app (``tests/apps/compiled_mlp_app.py``) the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import clean_env, minifal_command
from fleet_support import APPS_FLEET_DIR, Fleet, poll_until, start_fleet

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from minifal.fleet.backends.ray_actors import RunnerResources  # noqa: E402

FLEET_APP = APPS_FLEET_DIR / "fleet_app.py"
LOGS_APP = APPS_FLEET_DIR / "logs_app.py"
SCALING_APP = Path(__file__).parent / "apps_scaling" / "scaling_app.py"
COMPILED_APP = Path(__file__).parent / "apps" / "compiled_mlp_app.py"
SCALING_APP_NAME = "scaling-app"
KEEP_ALIVE_S = 5.0  # scaling_app.py's keep_alive
WAIT_S = 60.0
LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray resolves 127.0.0.1 in an address to the machine's external IP unless it thinks it runs
on one machine only (this flag, off on Linux): with it, the gateway stays on loopback too."""
NODE_ARGS: dict[str, Any] = {
    "num_cpus": 2,
    "node_ip_address": LOOPBACK,
    "object_store_memory": 80 * 2**20,
}
HEAD_ARGS: dict[str, Any] = {
    **NODE_ARGS,
    "include_dashboard": False,
    "_system_config": {
        # A lost node is known within ~1.5 s (Ray's default: ~15 s), no idle workers prestarted.
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 3,
        "health_check_initial_delay_ms": 0,
        "enable_worker_prestart": False,
    },
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    os.environ.update(LOOPBACK_ENV)
    try:
        cluster = Cluster(initialize_head=True, connect=False, head_node_args=HEAD_ARGS)
        cluster.add_node(**NODE_ARGS)
        yield cluster
        cluster.shutdown()
    finally:
        for name in LOOPBACK_ENV:
            os.environ.pop(name, None)


def ray_fleet(cluster: Cluster, app: Path, work_dir: Path, **kwargs: Any) -> Any:
    # The gateway is given Linux's default ("1"): a loopback --ray address must work without it.
    linux_default = dict.fromkeys(LOOPBACK_ENV, "1")
    env = {**linux_default, "MINIFAL_FAILURE_BACKOFF_SECONDS": "0.5", **kwargs.pop("env", {})}
    extra = kwargs.pop("extra_args", ("--ray", cluster.address))
    return start_fleet(app, work_dir, env=env, extra_args=extra, **kwargs)


def node_ids(cluster: Cluster) -> set[str]:
    return {node.node_id for node in cluster.list_all_nodes()}


def live(runners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [runner for runner in runners if runner["state"] != "TERMINATED"]


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/queue/local/{SCALING_APP_NAME}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.unit
def test_resources_follow_the_app_and_the_cluster() -> None:
    assert RunnerResources.for_app(2, cluster_gpus=8) == RunnerResources(num_cpus=1, num_gpus=2)
    assert RunnerResources.for_app(1, cluster_gpus=0) == RunnerResources(num_cpus=1, num_gpus=0)
    assert RunnerResources.for_app(0, cluster_gpus=8) == RunnerResources(num_cpus=1, num_gpus=0)


@pytest.mark.process
def test_runners_spread_over_both_nodes_and_serve(cluster: Cluster, tmp_path: Path) -> None:
    """``--ray`` alone is ``auto``: ``RAY_ADDRESS``. One runner per node, requests served,
    files reachable through the gateway, the node in ``/runners``, ``minifal runners`` and
    the startup report."""
    env = {"RAY_ADDRESS": cluster.address}
    with ray_fleet(
        cluster, FLEET_APP, tmp_path, workers=2, env=env, extra_args=("--ray",)
    ) as fleet:
        runners = fleet.runners()
        assert {r["node"] for r in runners} == node_ids(cluster), runners
        assert all(r["state"] == "IDLE" and r["port"] for r in runners)

        with fleet.client() as client:
            served = {
                client.post("/", json={"seconds": 0.3, "tag": str(i)}).json()["runner_id"]
                for i in range(2)
            } | {client.post("/", json={"seconds": 0.0}).json()["runner_id"] for _ in range(4)}
            assert served == {"runner-0", "runner-1"}
            stored = client.post("/file", json={"text": "from a node"}).json()["file"]["url"]
            assert httpx.get(stored).text == "from a node"

        table = run_cli(fleet, "runners", "--url", fleet.base_url)
        for runner in runners:
            assert runner["node"][:12] in table
        report = run_cli(fleet, "startup-report", "--data-dir", str(fleet.data_dir))
        header = report.splitlines()[1].split()  # after the "run <id>" line
        assert header[:2] == ["runner", "node"], report
        assert all(node[:12] in report for node in node_ids(cluster))
        assert "another data dir" not in fleet.log()


def run_cli(fleet: Fleet, *arguments: str) -> str:
    done = subprocess.run(
        minifal_command(*arguments),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.process
def test_a_requests_log_lines_come_through_its_actor(cluster: Cluster, tmp_path: Path) -> None:
    """A Ray runner's output is read on its node: its actor holds the request's lines until
    the gateway pulls them; a queued request's status has them all once COMPLETED."""
    with ray_fleet(cluster, LOGS_APP, tmp_path, workers=1) as fleet, fleet.client() as client:
        ticket = client.post("/queue/local/logs-app", json={"tag": "R", "lines": 2}).json()
        status_url = f"/queue/local/logs-app/requests/{ticket['request_id']}/status"

        def completed() -> dict[str, Any] | None:
            status = client.get(status_url, params={"logs": "1"}).json()
            return status if status["status"] == "COMPLETED" else None

        status = poll_until(completed, WAIT_S, "the request to complete", fleet)
        messages = {log["message"] for log in status["logs"]}
        kinds = ("logged", "printed", "stderr", "thread")
        assert messages == {f"R {kind} {i}" for kind in kinds for i in range(2)} | {"R pool task"}


@pytest.mark.process
def test_scales_from_zero_to_two_nodes_and_back(cluster: Cluster, tmp_path: Path) -> None:
    with (
        ray_fleet(cluster, SCALING_APP, tmp_path, workers=None) as fleet,
        fleet.client(timeout=WAIT_S) as client,
    ):
        assert live(fleet.runners()) == []
        handles = [submit(client, {"seconds": 1.0}) for _ in range(4)]
        nodes_seen: set[str] = set()

        def answered() -> bool:
            nodes_seen.update(r["node"] for r in live(fleet.runners()) if r["node"])
            statuses = [client.get(h["status_url"]).json()["status"] for h in handles]
            return all(status == "COMPLETED" for status in statuses)

        poll_until(answered, WAIT_S, "the burst answered", fleet)
        assert nodes_seen == node_ids(cluster)
        assert {client.get(h["response_url"]).json()["runner_id"] for h in handles} == {
            "runner-0",
            "runner-1",
        }
        runners = poll_until(
            lambda: (rs := fleet.runners()) and not live(rs) and rs,
            KEEP_ALIVE_S + 30.0,
            "scale-down to zero",
            fleet,
        )
        assert all("keep_alive" in (r["last_exit_reason"] or "") for r in runners), runners


@pytest.mark.compile
def test_one_compile_across_both_nodes(cluster: Cluster, tmp_path: Path) -> None:
    """Two runners, one per node, one shared data dir: one of them compiles (a real
    ``torch.compile`` inside ``synchronized_inductor_cache``), the other waits on the lease and
    loads what was published. The SD-Turbo app does the same on Ray in
    ``benchmarks/ray_sd_turbo.py``; here a small MLP keeps it to seconds of CPU."""
    with ray_fleet(cluster, COMPILED_APP, tmp_path, workers=2, ready_timeout=300) as fleet:
        runners = fleet.runners()
        assert {r["node"] for r in runners} == node_ids(cluster), runners
        with fleet.client(timeout=WAIT_S) as client:
            answer = client.post("/", json={"values": [0.5] * 16})
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["scores"]) == 4
        report = json.loads(
            run_cli(fleet, "startup-report", "--json", "--data-dir", str(fleet.data_dir))
        )
        caches = sorted(row["cache"] for row in report["runners"])
        assert caches[0] == "miss (compiled)" and caches[1].endswith("hit"), caches
        assert {row["node"] for row in report["runners"]} == node_ids(cluster), report


@pytest.mark.process
def test_a_lost_node_loses_no_queued_request(cluster: Cluster, tmp_path: Path) -> None:
    """Kill the worker node's raylet (and its processes) while both runners are busy with a
    burst: every request is answered once, the lost runner counts as crashed, its replacement
    starts on the head node."""
    head = cluster.head_node.node_id
    worker = next(node for node in cluster.worker_nodes)
    burst = 10
    with (
        ray_fleet(cluster, SCALING_APP, tmp_path, workers=2) as fleet,
        fleet.client(timeout=WAIT_S) as client,
    ):
        lost = next(r for r in fleet.runners() if r["node"] == worker.node_id)
        handles = [submit(client, {"seconds": 1.0}) for _ in range(burst)]
        poll_until(
            lambda: all(r["in_flight_requests"] for r in fleet.runners()),
            WAIT_S,
            "both runners busy",
            fleet,
        )
        cluster.remove_node(worker, allow_graceful=False)

        def all_answered() -> bool:
            statuses = [client.get(h["status_url"]).json()["status"] for h in handles]
            return all(status == "COMPLETED" for status in statuses)

        poll_until(all_answered, 90.0, "the burst answered after the node loss", fleet)
        results = [client.get(h["response_url"]) for h in handles]
        assert [r.status_code for r in results] == [200] * burst
        completed = Counter(
            line.split()[0] for line in (fleet.data_dir / "completed.log").read_text().splitlines()
        )
        assert completed == Counter(h["request_id"] for h in handles)

        def replaced() -> dict[str, Any] | None:
            now = next(r for r in fleet.runners() if r["runner_id"] == lost["runner_id"])
            return now if now["state"] in ("IDLE", "RUNNING") and now["node"] == head else None

        again = poll_until(replaced, WAIT_S, "the lost runner back on the head node", fleet)
        reason = again["last_exit_reason"] or ""
        assert "node was lost" in reason or "lost connection" in reason, again
    cluster.add_node(**NODE_ARGS)
