"""fal's own end-to-end app tests (fal-ai/fal, ``projects/fal/tests/e2e/test_apps.py``), as a
peer suite: the same kinds of apps (``tests/apps_fal/fal_e2e_apps.py``) under ``minifal run``,
called through the gateway with fal's client (``fal_client``, pointed at the gateway) and fal's
``AppClient``. Each test names the fal test it ports; docs/fal-compatibility.md lists every fal
test, ported or why not. One fleet per app, for the tests of that app (a class each).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import fal_client
import fal_client.client as fal_client_module
import httpx
import pytest
from fal_client.client import FalClientHTTPError
from fleet_support import Fleet, fal_client_of, poll_until, start_fleet

from minifal.compat.fal_alias import install_fal_alias

pytestmark = pytest.mark.process

APPS_FILE = Path(__file__).parent / "apps_fal" / "fal_e2e_apps.py"


def _load_apps() -> ModuleType:
    """The apps module in this process too (``AppClient`` reads the App classes)."""
    install_fal_alias()
    spec = importlib.util.spec_from_file_location("fal_e2e_apps", APPS_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


apps = _load_apps()

# fal's names, as fal's tests import them (after the alias is installed)
from fal.app import AppClient, AppClientError  # noqa: E402
from fal.exceptions.gpu import _CUDA_OOM_MESSAGE, _GPU_ERROR_STATUS_CODE  # noqa: E402


@contextmanager
def served(app_class: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    reference = f"{APPS_FILE}::{app_class}"
    with start_fleet(reference, tmp_path_factory.mktemp(app_class), workers=1) as fleet:
        yield fleet


def wait_in_progress(handle: fal_client.SyncRequestHandle) -> None:
    poll_until(
        lambda: isinstance(handle.status(), fal_client.InProgress), 30, "the request to start"
    )


# -- AdditionApp (fal's addition_app) -------------------------------------------------------------


class TestAdditionApp:
    app_id = "local/addition-app"

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[fal_client.SyncClient]:
        with served("AdditionApp", tmp_path_factory) as fleet, fal_client_of(fleet) as client:
            yield client

    def test_app_client(self, client: fal_client.SyncClient) -> None:
        assert client.run(self.app_id, arguments={"lhs": 1, "rhs": 2})["result"] == 3
        answer = client.run(self.app_id, arguments={"lhs": 2, "rhs": 3, "wait_time": 1})
        assert answer["result"] == 5

    def test_app_openapi_spec_metadata(self, client: fal_client.SyncClient) -> None:
        """fal stores the OpenAPI in the app's metadata; the gateway serves it."""
        spec = client._client.get(fal_client_module.RUN_URL_FORMAT + "openapi.json").json()
        for key in ("openapi", "info", "paths", "components"):
            assert key in spec, key

    def test_404_response(self, client: fal_client.SyncClient) -> None:
        with pytest.raises(FalClientHTTPError, match=r"Path /.*other not found") as error:
            client.run(self.app_id, path="/other", arguments={"lhs": 1, "rhs": 2})
        assert error.value.status_code == 404

    def test_app_cancellation_is_ignored_by_an_app_without_a_cancel_endpoint(
        self, client: fal_client.SyncClient
    ) -> None:
        """The second half of fal's test_app_cancellation."""
        handle = client.submit(self.app_id, arguments={"lhs": 1, "rhs": 2, "wait_time": 1})
        wait_in_progress(handle)
        handle.cancel()
        assert handle.get() == {"result": 3}


# -- StatefulAdditionApp ---------------------------------------------------------------------------


class TestStatefulAdditionApp:
    app_id = "local/stateful-addition-app"

    @pytest.fixture(scope="class")
    @classmethod
    def fleet(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
        with served("StatefulAdditionApp", tmp_path_factory) as fleet:
            yield fleet

    def test_app_client_path_included_in_app_id(self, fleet: Fleet) -> None:
        with fal_client_of(fleet) as client:
            assert client.run(self.app_id + "/reset", arguments={})["result"] == 0
            answer = client.run(self.app_id + "/increment", arguments={"value": 3})
            assert answer["result"] == 3
            answer = client.run(self.app_id, arguments={"value": 3}, path="increment")
            assert answer["result"] == 6

    def test_stateful_app_client(self, fleet: Fleet) -> None:
        steps = [("/reset", 0, 0), ("/increment", 1, 1), ("/increment", 2, 3)]
        steps += [("/decrement", 1, 2), ("/decrement", 2, 0)]
        with fal_client_of(fleet) as client:
            for path, value, expected in steps:
                arguments = {} if path == "/reset" else {"value": value}
                answer = client.run(self.app_id, arguments=arguments, path=path)
                assert answer["result"] == expected, path

    def test_pydantic_validation_billing(self, fleet: Fleet) -> None:
        """fal's test reaches the App through AppClient; here through the gateway's URL."""
        app_client = AppClient(apps.StatefulAdditionApp, fleet.url(self.app_id))
        response = httpx.post(app_client.url + "/increment", json={"value": "not-an-integer"})
        assert response.status_code == 422
        assert response.headers.get("x-fal-billable-units") == "0"

    def test_app_client_methods_through_the_gateway(self, fleet: Fleet) -> None:
        """fal's AppClient against the gateway: one method per endpoint, output models back."""
        app_client = AppClient(apps.StatefulAdditionApp, fleet.url(self.app_id))
        assert app_client.reset({}) == apps.Output(result=0)
        assert app_client.increment({"value": 5}).result == 5
        with pytest.raises(AppClientError) as error:
            app_client.increment({"value": "x"})
        assert error.value.status_code == 422


# -- ExceptionApp, through AppClient.connect as fal's tests do ------------------------------------


@contextmanager
def connected(app_class: type, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppClient]:
    """``AppClient.connect``, its runner's data dir in the test's temporary directory."""
    data_dir = tmp_path_factory.mktemp(app_class.__name__) / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINIFAL_DATA_DIR", str(data_dir))
        with AppClient.connect(app_class) as client:
            yield client


@pytest.fixture(scope="module")
def exception_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppClient]:
    with connected(apps.ExceptionApp, tmp_path_factory) as client:
        yield client


def test_app_exceptions(exception_app: AppClient) -> None:
    with pytest.raises(AppClientError) as app_exc:
        exception_app.app_exception({})
    assert app_exc.value.status_code == 401

    with pytest.raises(AppClientError) as field_exc:
        exception_app.field_exception({"lhs": 1, "rhs": "2"})
    assert field_exc.value.status_code == 422
    assert field_exc.value.headers.get("x-fal-billable-units") is None

    for method in ("cuda_exception", "cuda_exception_2", "cuda_exception_3"):
        with pytest.raises(AppClientError) as cuda_exc:
            getattr(exception_app, method)({})
        assert cuda_exc.value.status_code == _GPU_ERROR_STATUS_CODE, method
        assert _CUDA_OOM_MESSAGE in cuda_exc.value.message, method


def test_traceback_of_a_failing_endpoint_is_a_500(exception_app: AppClient) -> None:
    """What fal's test_traceback_logs can check without fal's log service: the call fails."""
    with pytest.raises(AppClientError) as error:
        exception_app.fail({})
    assert error.value.status_code == 500


def _post(exception_app: AppClient, path: str, body: dict) -> httpx.Response:
    return httpx.post(exception_app.url + path, json=body, timeout=30)


def test_404_billable_units(exception_app: AppClient) -> None:
    response = _post(exception_app, "/non-existent-endpoint", {})
    assert response.status_code == 404
    assert response.headers.get("x-fal-billable-units") == "0"


def test_field_exception_billing(exception_app: AppClient) -> None:
    response = _post(exception_app, "/field-exception", {"lhs": 1, "rhs": 2})
    assert response.status_code == 422
    assert "x-fal-billable-units" not in response.headers


@pytest.mark.parametrize(
    ("value", "header"),
    [
        (42, "42"),  # fal's test_field_exception_int_billable_units_formatting
        (3.14159265, "3.14159265"),  # ..._float_billable_units_formatting
        (1.23e-5, "0.00001230"),  # test_field_exception_scientific_notation_small
        (1.23e10, "12300000000.00000000"),  # test_field_exception_scientific_notation_large
    ],
)
def test_field_exception_billable_units_formatting(
    exception_app: AppClient, value: float, header: str
) -> None:
    response = _post(exception_app, "/field-exception-units", {"value": value})
    assert response.status_code == 422
    assert response.headers.get("x-fal-billable-units") == header


def test_field_exception_invalid_billable_units(exception_app: AppClient) -> None:
    response = _post(exception_app, "/field-exception-units", {"value": "not_a_number"})
    assert response.status_code == 500


def test_field_exception_default_billable_units(exception_app: AppClient) -> None:
    response = _post(exception_app, "/field-exception", {"lhs": 1, "rhs": 2})
    assert response.status_code == 422
    assert "x-fal-billable-units" not in response.headers


# -- HintsApp --------------------------------------------------------------------------------------


def test_hints_encoding(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hints that latin-1 cannot carry do not break the app; those it can are sent."""
    with connected(apps.HintsApp, tmp_path_factory) as client:
        response = httpx.post(client.url + "/add", json={"lhs": 1, "rhs": 2}, timeout=30)
    assert response.is_success
    assert response.json()["result"] == 3
    assert dict(response.headers.raw)[b"x-fal-runner-hints"] == "é".encode("latin-1")


# -- BrokenApp -------------------------------------------------------------------------------------


def test_broken_app_failure() -> None:
    """fal's wrap_app fails to make the OpenAPI; minifal's runner fails to build the route."""
    from minifal.runner.asgi import build_asgi_app

    with pytest.raises(Exception, match="Exception"):
        build_asgi_app(apps.BrokenApp())


# -- CancellableApp --------------------------------------------------------------------------------


class TestCancellableApp:
    app_id = "local/cancellable-app"

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[fal_client.SyncClient]:
        with served("CancellableApp", tmp_path_factory) as fleet, fal_client_of(fleet) as client:
            yield client

    def test_app_cancellation(self, client: fal_client.SyncClient) -> None:
        handle = client.submit(self.app_id, arguments={"lhs": 1, "rhs": 2, "wait_time": 6})
        wait_in_progress(handle)
        handle.cancel()
        with pytest.raises(FalClientHTTPError) as error:
            handle.get()
        assert error.value.status_code == 499

    def test_app_disconnect_behavior(self, client: fal_client.SyncClient) -> None:
        """request_timeout (2 s here, 4 s in fal's) answers 504, handled or not."""
        arguments = {"lhs": 1, "rhs": 2, "wait_time": 4}
        with pytest.raises(FalClientHTTPError) as error:
            client.run(self.app_id, arguments=arguments, path="/well-handled")
        assert error.value.status_code == 504
        answer = client.run(
            self.app_id, arguments={**arguments, "wait_time": 1}, path="/well-handled"
        )
        assert answer == {"result": 3}
        with pytest.raises(FalClientHTTPError) as error:
            client.run(self.app_id, arguments=arguments)
        assert error.value.status_code == 504


# -- HealthOverrideApp -----------------------------------------------------------------------------


def test_app_health_override(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The declared /ready made the runner ready although /health answers 502. The gateway
    forwards POST and websockets only, so the GETs go to the runner itself."""
    with served("HealthOverrideApp", tmp_path_factory) as fleet, fal_client_of(fleet) as client:
        assert client.run("local/health-override-app", arguments={"lhs": 1, "rhs": 2}) == {
            "result": 3
        }
        runner_url = f"http://127.0.0.1:{fleet.runners()[0]['port']}"
        ready = httpx.get(f"{runner_url}/ready")
        assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
        assert httpx.get(f"{runner_url}/health").status_code == 502


# -- QueueBlockingApp, SleepApp --------------------------------------------------------------------


def test_start_timeout_queue_blocking(tmp_path_factory: pytest.TempPathFactory) -> None:
    app_id = "local/queue-blocking-app"
    with served("QueueBlockingApp", tmp_path_factory) as fleet, fal_client_of(fleet) as client:
        first = client.submit(app_id, arguments={"wait_time": 4})
        wait_in_progress(first)
        with pytest.raises(FalClientHTTPError) as error:
            # fal_client's smallest start_timeout is over 1 s; fal's test: 5 s behind 10.
            client.subscribe(app_id, arguments={"wait_time": 0.1}, start_timeout=1.5)
        assert error.value.status_code == 504
        assert error.value.response_headers.get("x-fal-request-timeout-type") == "user"
        assert first.get() == {"slept": True}


class TestSleepApp:
    app_id = "local/sleep-app"

    @pytest.fixture(scope="class")
    @classmethod
    def fleet(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
        with served("SleepApp", tmp_path_factory) as fleet:
            yield fleet

    def test_app_client_async(self, fleet: Fleet) -> None:
        """xfail on fal (its backend); here: a result asked too early is a 400, queue events
        and logs, then the result."""
        with fal_client_of(fleet) as client:
            handle = client.submit(self.app_id, arguments={"wait_time": 1})
            early = httpx.get(fleet.url(f"queue/{self.app_id}/requests/{handle.request_id}"))
            assert early.status_code == 400
            assert handle.get() == {"slept": True}

            handle = client.submit(self.app_id, arguments={"wait_time": 1})
            events = list(handle.iter_events(with_logs=True))
            # fal_client's iterator ends with the Completed status (fal's older one did not).
            assert isinstance(events[-1], fal_client.Completed)
            for event in events[:-1]:
                assert isinstance(event, (fal_client.Queued, fal_client.InProgress))
            assert isinstance(handle.status(with_logs=True), fal_client.Completed)
            assert handle.get() == {"slept": True}

    def test_app_client_async_logs(self, fleet: Fleet) -> None:
        """The logs half of fal's test_app_client_async: what the endpoint printed."""
        with fal_client_of(fleet) as client:
            handle = client.submit(self.app_id, arguments={"wait_time": 0.5})
            handle.get()
            status = handle.status(with_logs=True)
        assert any("sleeping..." in log["message"] for log in status.logs or [])

    def test_runner_machine_type(self, fleet: Fleet) -> None:
        """fal lists runners with its control plane; minifal's gateway at /runners."""
        runners = fleet.runners()
        assert len(runners) >= 1
        assert runners[0]["machine_type"] == "XS"
        assert runners[0]["alias"] == "sleep-app"


# -- RealtimeApp -----------------------------------------------------------------------------------


class TestRealtimeApp:
    app_id = "local/realtime-app"

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[fal_client.SyncClient]:
        with served("RealtimeApp", tmp_path_factory) as fleet, fal_client_of(fleet) as client:
            yield client

    def _connect(self, client: fal_client.SyncClient, path: str = "/realtime", **kwargs):
        return client.realtime(self.app_id, use_jwt=False, path=path, **kwargs)

    def test_realtime_connection(self, client: fal_client.SyncClient) -> None:
        assert client.run(self.app_id, arguments={"prompt": "a cat"})["text"] == "a cat"
        with self._connect(client) as connection:
            for _ in range(3):
                connection.send({"prompt": "a cat"})
                assert connection.recv()["text"] == "a cat"

        with self._connect(client, "/realtime/batched") as connection:
            connection.send({"prompt": "keep busy"})
            # As fal's test: let the first call start (half its cost), then send ten at once.
            time.sleep(apps.BATCH_COST_SECONDS / 2)
            for prompt in range(10):
                connection.send({"prompt": str(prompt)})
            assert connection.recv()["texts"] == ["keep busy"]
            received: set[str] = set()
            batch_sizes = []
            while len(received) < 10:
                texts = connection.recv()["texts"]
                received.update(texts)
                batch_sizes.append(len(texts))
        assert received == {str(prompt) for prompt in range(10)}
        assert batch_sizes == [4, 4, 2]

    def test_realtime_ws_endpoint(self, client: fal_client.SyncClient) -> None:
        with client.ws_connect(self.app_id, use_jwt=False, path="/ws") as ws:
            messages = [json.loads(ws.recv()) for _ in range(3)]
        assert messages == [{"message": "Hello world!"}] * 3

    def test_realtime_connection_custom_codec(self, client: fal_client.SyncClient) -> None:
        codec = {
            "encode_message": apps.json_encode_message,
            "decode_message": apps.json_decode_message,
        }
        with self._connect(client, "/realtime/json", **codec) as connection:
            connection.send({"prompt": "json cat"})
            assert connection.recv()["text"] == "json cat"

    @pytest.mark.parametrize(
        "path", ["/realtime/server-streaming", "/realtime/server-streaming-sync"]
    )
    def test_realtime_server_streaming_mode(self, client: fal_client.SyncClient, path: str) -> None:
        """fal's test_realtime_server_streaming_mode and ..._sync_mode."""
        with self._connect(client, path) as connection:
            connection.send({"prompt": "stream"})
            texts = [connection.recv()["text"] for _ in range(3)]
        assert texts == ["stream:0", "stream:1", "stream:2"]

    def test_realtime_client_streaming_mode(self, client: fal_client.SyncClient) -> None:
        with self._connect(client, "/realtime/client-streaming") as connection:
            for prompt in ("first", "second", "third"):
                connection.send({"prompt": prompt})
            assert connection.recv()["texts"] == ["first", "second", "third"]

    def test_realtime_bidi_mode(self, client: fal_client.SyncClient) -> None:
        with self._connect(client, "/realtime/bidi") as connection:
            connection.send({"prompt": "one"})
            connection.send({"prompt": "two"})
            assert connection.recv()["text"] == "echo:one"
            assert connection.recv()["text"] == "echo:two"


# -- AppRefApp, RequestContextApp: three requests at once on one runner ----------------------------


def _three_at_once(client: fal_client.SyncClient, app_id: str, headers: list[dict]) -> list:
    handles = [client.submit(app_id, arguments={}, headers=h) for h in headers]
    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda handle: handle.get(), handles))


def test_app_ref_app_client(tmp_path_factory: pytest.TempPathFactory) -> None:
    with served("AppRefApp", tmp_path_factory) as fleet, fal_client_of(fleet) as client:
        headers = [{"x-request-id": f"caller-{index}"} for index in range(3)]
        results = _three_at_once(client, "local/app-ref-app", headers)
    for index, result in enumerate(results):
        assert result["from_app"] == result["from_external_method"] == f"caller-{index}"


class TestRequestContextApp:
    app_id = "local/request-context-app"
    preference = {"expiration_duration_seconds": "3600"}

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[fal_client.SyncClient]:
        with served("RequestContextApp", tmp_path_factory) as fleet, fal_client_of(fleet) as client:
            yield client

    def _headers(self) -> dict[str, str]:
        """fal's gateway always sends the caller's object lifecycle preference; minifal's
        passes on what the caller sends, so this caller sends one."""
        return {"x-fal-object-lifecycle-preference": json.dumps(self.preference)}

    def test_request_context_fields_populated(self, client: fal_client.SyncClient) -> None:
        result = client.run(self.app_id, arguments={}, headers=self._headers())
        assert result["request_id_from_context"] is not None
        assert result["endpoint_from_context"] == "/"
        assert result["lifecycle_preference_from_context"] == self.preference
        assert result["request_id_from_context"] == result["request_id_from_header"]

    def test_request_context_isolation_with_multiplexing(
        self, client: fal_client.SyncClient
    ) -> None:
        results = _three_at_once(client, self.app_id, [self._headers()] * 3)
        for result in results:
            assert result["request_id_from_context"] == result["request_id_from_header"]
        assert len({result["request_id_from_context"] for result in results}) == 3
