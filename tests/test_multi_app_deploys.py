"""Deploys to a gateway of several apps, in process (``tests/in_process.py``): a deploy goes to
the app it names (by name, by the reference an app is served from, or by the app its file
loads), that app alone rolls out, and each app's revisions are its own. Refusals name the apps.

The manifest of a new revision is computed in a child process by ``inspect_app``; here it is
replaced by a function of the kept file's text (the process test runs the real one:
test_multi_app_fleet.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from in_process import gateway_client, group_client, manifest_of, wait_for
from starlette.testclient import TestClient
from word_apps import ReverseApp, UpperApp

from minifal.cli.deploy import describe
from minifal.fleet import deployer as deployer_module
from minifal.fleet.gateway_group import GatewayGroup, apps_served_from, with_served_class
from minifal.runner.app_manifest import AppManifest, ManifestError

pytestmark = pytest.mark.unit

KEY = {"Authorization": "Key k"}


class LonelyApp(UpperApp):
    """Served by no gateway here."""


APPS = {"UpperApp": UpperApp, "ReverseApp": ReverseApp, "LonelyApp": LonelyApp}


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every reference loaded for a deploy. An app file's text names the class it holds
    (``UpperApp v2``); a reference ``file::Class`` picks that class; ``raise`` does not load."""
    loaded: list[str] = []

    def inspect(reference: str, source: str | None = None) -> AppManifest:
        loaded.append(reference)
        assert source is not None
        text = Path(source).read_text()
        if "raise" in text:
            raise ManifestError("SyntaxError: invalid syntax")
        named = reference.partition("::")[2] or next(n for n in APPS if n in text)
        return manifest_of(APPS[named])

    monkeypatch.setattr(deployer_module, "inspect_app", inspect)
    return loaded


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[TestClient, GatewayGroup, Path]]:
    """upper-app served from ``apps/upper.py``, reverse-app from ``apps/reverse.py``."""
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "upper.py").write_text("UpperApp v1")
    (apps / "reverse.py").write_text("ReverseApp v1")
    references = {"upper-app": str(apps / "upper.py"), "reverse-app": str(apps / "reverse.py")}
    with group_client(
        [UpperApp(), ReverseApp()], tmp_path, references=references, auth_key="k"
    ) as (client, group):
        yield client, group, apps


def deploy(client: TestClient, **body: str) -> tuple[int, dict[str, object]]:
    answer = client.post("/_minifal/deploy", json=body, headers=KEY)
    return answer.status_code, answer.json()


def serving(client: TestClient, app_name: str) -> str:
    revisions = client.get("/_minifal/revisions", params={"app_name": app_name}, headers=KEY)
    return revisions.json()["serving"]


def test_a_deploy_rolls_out_the_app_it_names_and_no_other(
    fleet: tuple[TestClient, GatewayGroup, Path], loads: list[str]
) -> None:
    client, group, apps = fleet
    (apps / "upper.py").write_text("UpperApp v2")
    status, answer = deploy(client, app=str(apps / "upper.py"))
    assert status == 202, answer
    assert answer["app_name"] == "upper-app" and answer["status"] == "deploying"
    new = str(answer["revision"])
    wait_for(lambda: serving(client, "upper-app") == new, "the new revision serving")
    assert loads == [str(apps / "upper.py")]  # by its reference: loaded once, by its deployer

    one = client.get(f"/_minifal/revisions/{new}", headers=KEY).json()
    assert one["app_name"] == "upper-app" and one["status"] == "serving"
    every = client.get("/_minifal/revisions", headers=KEY).json()["apps"]
    assert [r["status"] for r in every["upper-app"]["revisions"]] == ["retired", "serving"]
    assert [r["status"] for r in every["reverse-app"]["revisions"]] == ["serving"]
    wait_for(
        lambda: (
            {
                (row["runner_id"], row["revision"][:2])
                for row in client.get("/runners", headers=KEY).json()["runners"]
                if row["state"] != "TERMINATED"
            }
            == {("upper-app-runner-1", "r2"), ("reverse-app-runner-0", "r1")}
        ),
        "upper-app's old runner drained, reverse-app's untouched",
    )
    assert client.post("/local/reverse-app", json={"text": "ab"}, headers=KEY).json() == {
        "text": "ba"
    }
    assert group.gateways["reverse-app"].supervisor.find("reverse-app-runner-0") is not None


def test_a_deploy_goes_to_the_app_its_file_loads_when_no_app_is_served_from_it(
    fleet: tuple[TestClient, GatewayGroup, Path], loads: list[str]
) -> None:
    client, _, apps = fleet
    moved = apps / "reverse_moved.py"
    moved.write_text("ReverseApp v2")
    status, answer = deploy(client, app=str(moved), strategy="recreate")
    assert (status, answer["app_name"], answer["app"]) == (202, "reverse-app", str(moved))
    assert loads == [str(moved)]  # loaded once: to know its app, and for its deployer
    assert serving(client, "upper-app").startswith("r1-")


def test_a_deploy_by_app_name_alone_takes_its_serving_file(
    fleet: tuple[TestClient, GatewayGroup, Path], loads: list[str]
) -> None:
    client, _, _ = fleet
    status, answer = deploy(client, app_name="reverse-app")
    assert (status, answer["unchanged"], answer["app_name"]) == (200, True, "reverse-app")
    assert loads == []


def test_a_deploy_that_names_no_served_app_is_refused_with_the_apps(
    fleet: tuple[TestClient, GatewayGroup, Path], loads: list[str]
) -> None:
    client, group, apps = fleet
    expected = "upper-app, reverse-app"

    status, answer = deploy(client)
    assert status == 422 and expected in str(answer["detail"])
    status, answer = deploy(client, app_name="nope", app=str(apps / "upper.py"))
    assert status == 404 and answer["detail"] == f"no app 'nope' here; the apps: {expected}"
    (apps / "lonely.py").write_text("LonelyApp")
    status, answer = deploy(client, app=str(apps / "lonely.py"))
    assert status == 404
    assert (
        answer["detail"] == f"{apps / 'lonely.py'} is the app 'lonely-app', not one of: {expected}"
    )
    (apps / "broken.py").write_text("raise")
    status, answer = deploy(client, app=str(apps / "broken.py"))
    assert (status, answer["problems"]) == (422, ["SyntaxError: invalid syntax"])
    status, answer = deploy(client, app=str(apps / "missing.py"))
    assert status == 422 and str(answer["detail"]).startswith("cannot read")

    status, answer = deploy(client, app_name="reverse-app", app=str(apps / "upper.py"))
    assert status == 409 and answer["problems"] == [
        "app name changed: 'reverse-app' -> 'upper-app'",
        "endpoint /twice removed",
    ]
    assert [r.number for r in group.gateways["reverse-app"].deployer.revisions] == [1]


def test_routes_need_the_key_and_from_afar_a_deploy_needs_a_gateway_with_one(
    tmp_path: Path, fleet: tuple[TestClient, GatewayGroup, Path]
) -> None:
    client, _, _ = fleet
    assert client.post("/_minifal/deploy", json={"app_name": "upper-app"}).status_code == 401
    assert client.get("/_minifal/revisions").status_code == 401
    with group_client([UpperApp(), ReverseApp()], tmp_path / "open") as (open_client, _):
        refused = open_client.post("/_minifal/deploy", json={"app_name": "upper-app"})
        assert refused.status_code == 403 and "loopback" in refused.json()["detail"]


def test_revisions_are_asked_per_app(fleet: tuple[TestClient, GatewayGroup, Path]) -> None:
    client, group, _ = fleet
    upper = group.gateways["upper-app"].deployer.serving.revision_id
    unknown = client.get("/_minifal/revisions", params={"app_name": "nope"}, headers=KEY)
    assert unknown.status_code == 404 and "upper-app, reverse-app" in unknown.json()["detail"]
    assert client.get(f"/_minifal/revisions/{upper}", headers=KEY).json()["app_name"] == (
        "upper-app"
    )
    elsewhere = client.get(
        f"/_minifal/revisions/{upper}", params={"app_name": "reverse-app"}, headers=KEY
    )
    assert elsewhere.status_code == 404


def test_a_revision_id_of_two_apps_is_asked_with_its_app(tmp_path: Path) -> None:
    """Two files of the same content (or a project's two tables of one ``ref``): both apps'
    first revisions have the same id."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "same.py").write_text("UpperApp ReverseApp")
    references = {
        "upper-app": str(tmp_path / "a/same.py"),
        "reverse-app": str(tmp_path / "b/same.py"),
    }
    apps = [UpperApp(), ReverseApp()]
    with group_client(apps, tmp_path, references=references, auth_key="k") as (client, group):
        first = group.gateways["upper-app"].deployer.serving.revision_id
        assert group.gateways["reverse-app"].deployer.serving.revision_id == first
        both = client.get(f"/_minifal/revisions/{first}", headers=KEY)
        assert both.status_code == 422 and "?app_name=" in both.json()["detail"]
        one = client.get(
            f"/_minifal/revisions/{first}", params={"app_name": "reverse-app"}, headers=KEY
        )
        assert one.json()["app_name"] == "reverse-app"


def test_two_apps_of_one_file_take_a_deploy_of_the_file_only_with_a_name(
    tmp_path: Path, loads: list[str]
) -> None:
    shared = tmp_path / "two_apps.py"
    shared.write_text("UpperApp ReverseApp")
    references = {"upper-app": f"{shared}::UpperApp", "reverse-app": f"{shared}::ReverseApp"}
    apps = [UpperApp(), ReverseApp()]
    with group_client(apps, tmp_path, references=references, auth_key="k") as (client, _):
        status, answer = deploy(client, app=str(shared))
        assert status == 422 and "several apps here (upper-app, reverse-app)" in str(
            answer["detail"]
        )
        shared.write_text("UpperApp ReverseApp v2")
        status, answer = deploy(client, app=str(shared), app_name="reverse-app")
        assert (status, answer["app"]) == (202, f"{shared}::ReverseApp")
        assert loads == [f"{shared}::ReverseApp"]


def test_a_gateway_of_one_app_checks_a_deploys_app_name(tmp_path: Path) -> None:
    with gateway_client(UpperApp(), tmp_path, auth_key="k") as (client, _):
        other = deploy(client, app_name="reverse-app")
        assert other == (
            404,
            {"detail": "no app 'reverse-app' here; this gateway serves upper-app"},
        )
        status, answer = deploy(client, app_name="upper-app")
        assert (status, answer["unchanged"]) == (200, True) and "app_name" not in answer


def test_what_a_reference_names_without_loading_it() -> None:
    served = {"a": "/p/two.py::A", "b": "/p/two.py::B", "c": "/p/c.py", "d": "project-d"}
    assert apps_served_from("/p/two.py::A", served) == ["a"]
    assert apps_served_from("/p/two.py", served) == ["a", "b"]
    assert apps_served_from("/p/two.py::C", served) == []
    assert apps_served_from("/p/c.py", served) == ["c"]
    assert apps_served_from("project-d", served) == ["d"]
    assert apps_served_from("/p/new.py", served) == []
    assert with_served_class("/p/two.py", "/p/two.py::B") == "/p/two.py::B"
    assert with_served_class("/p/two.py::A", "/p/two.py::B") == "/p/two.py::A"
    assert with_served_class("/p/other.py", "/p/two.py::B") == "/p/other.py"
    assert with_served_class("/p/c.py", "/p/c.py") == "/p/c.py"


def test_minifal_deploy_names_the_app_of_a_gateway_of_several() -> None:
    revision = {"revision": "r2-3fa9c1d2", "status": "serving", "reason": None}
    assert describe(revision) == "revision r2-3fa9c1d2: serving"
    several = {**revision, "app_name": "hello"}
    assert describe(several, "deploying (rolling)") == (
        "revision r2-3fa9c1d2 of hello: deploying (rolling)"
    )
