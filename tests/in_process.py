"""A gateway and its runners in this process, for the unit tier: no processes, no sockets.

Each runner is the App's own ASGI app (``minifal.runner.asgi``) reached through httpx's ASGI
transport; the fake backend (``fleet_fakes``) "starts" runners that are ready at once. The
caller drives the gateway's ASGI app (``fleet.http_api``) with Starlette's ``TestClient``, which
runs its lifespan: the gateway's autoscaler, scheduler, supervisor and forwarder are the real ones.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fleet_fakes import FakeBackend
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from minifal.app import App
from minifal.fleet.gateway import Gateway, GatewayOptions
from minifal.fleet.gateway_group import GatewayGroup, runner_prefix
from minifal.fleet.gpu_pool import GpuPool
from minifal.fleet.http_api import build_gateway_app, build_group_app
from minifal.fleet.job_store.base import JobStore
from minifal.fleet.runner_http import RunnerAddress
from minifal.fleet.scaler import ScalingSettings
from minifal.fleet.shared_gpu_pool import SharedGpuPool
from minifal.runner.app_manifest import AppManifest, ManifestEndpoint
from minifal.runner.asgi import build_asgi_app

READY_TIMEOUT_S = 10.0


class InProcessAnswer:
    """A runner's answer, whole: what ``forwarding`` reads of a ``runner_http.RunnerResponse``."""

    complete = True

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = [(name.lower(), value) for name, value in response.headers.raw]
        self._body = response.content

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    def body_now(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def read(self) -> bytes:
        return self._body

    def close(self) -> None:
        pass


class InProcessRunners:
    """The gateway's runner client: every runner's requests go to one ASGI app in this process."""

    def __init__(self, runner_app: ASGIApp) -> None:
        transport = httpx.ASGITransport(app=runner_app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://runner")
        self.sent: list[tuple[str, str]] = []
        """(runner host, path) of each request, in order."""

    async def send(
        self,
        address: RunnerAddress,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> InProcessAnswer:
        self.sent.append((address.host, path))
        response = await self.client.request(method, path, headers=list(headers), content=body)
        return InProcessAnswer(response)

    async def aclose(self) -> None:
        await self.client.aclose()


def manifest_of(app_class: type[App]) -> AppManifest:
    """What ``runner.app_manifest`` would report of ``app_class``, built here."""
    return AppManifest(
        app_name=app_class.resolved_app_name(),
        class_name=app_class.__name__,
        settings=app_class.settings(),
        endpoints=tuple(
            ManifestEndpoint(spec.path, spec.kind, spec.health_check)
            for _, spec in app_class.endpoints()
        ),
        openapi=build_asgi_app(app_class()).openapi(),
        billing_components=app_class.get_billing_components(),
    )


def in_process_gateway(app: App, data_dir: Path, runners: int, **options: Any) -> Gateway:
    """A gateway of ``runners`` in-process runners serving ``app`` (not started); ``options``
    (``GatewayOptions`` fields) may give other ``app_reference``, ``scaling`` and ``gpus``."""
    app_class = type(app)
    defaults = {
        "app_reference": app_class.__name__,
        "scaling": ScalingSettings.fixed(runners),
        "gpus": [],
    }
    return Gateway(
        manifest_of(app_class),
        GatewayOptions(
            data_dir=data_dir,
            run_id="in-process",
            public_url="http://testserver/",
            echo_output=False,
            **{**defaults, **options},
        ),
        backend=FakeBackend(),
        runner_client=InProcessRunners(build_asgi_app(app)),  # type: ignore[arg-type]
    )


@contextmanager
def gateway_client(
    app: App, data_dir: Path, runners: int = 1, **options: Any
) -> Iterator[tuple[TestClient, Gateway]]:
    """A gateway of ``runners`` in-process runners serving ``app``, its lifespan running; yields
    once every runner is ready. ``options``: more ``GatewayOptions`` fields."""
    gateway = in_process_gateway(app, data_dir, runners, **options)
    with TestClient(build_gateway_app(gateway)) as client:
        wait_for(lambda: client.get("/health").json()["runners_ready"] == runners, "ready runners")
        yield client, gateway


@contextmanager
def group_client(
    apps: Iterable[App],
    data_dir: Path,
    runners: int = 1,
    job_stores: Callable[[str], JobStore] | None = None,
    gpus: list[str] | None = None,
    references: Mapping[str, str] | None = None,
    auth_key: str | None = None,
    **options: Any,
) -> Iterator[tuple[TestClient, GatewayGroup]]:
    """One gateway serving several apps (``runners`` in-process runners each), as ``minifal
    run A B`` builds it: a gateway per app, runner ids prefixed with the app, one GPU pool of
    ``gpus`` (none: the arbiter grants every start), each app's job store (``job_stores(app
    name)``; default: in memory) and reference (``references[app name]``; default: its class
    name), the gateway's ``auth_key``. ``options``: more ``GatewayOptions`` fields of every
    app."""
    gpus = gpus or []
    pool = GpuPool(gpus, 0)
    gateways = {}
    for app in apps:
        name = type(app).resolved_app_name()
        own: dict[str, Any] = {"job_store": job_stores(name)} if job_stores else {}
        if references and name in references:
            own["app_reference"] = references[name]
        gateways[name] = in_process_gateway(
            app,
            data_dir,
            runners,
            gpus=gpus,
            gpu_pool=pool,
            runner_prefix=runner_prefix(name),
            auth_key=auth_key,
            **own,
            **options,
        )
    group = GatewayGroup(gateways, "in-process", SharedGpuPool(gpus))
    with TestClient(build_group_app(group, auth_key, 1 << 20)) as client:
        wait_for(
            lambda: client.get("/health").json()["runners_ready"] == runners * len(gateways),
            "ready runners",
        )
        yield client, group


def wait_for(condition: Any, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll ``condition`` (a probe of the gateway's own answers) until true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)  # back-off between probes of a bounded poll
