"""Several apps behind one gateway (``minifal run A B``): one ``Gateway`` per app, together.

Each app keeps everything a gateway of its own would have: its supervisor and runners, its
queue and scheduler, its scaling settings, its job store (its own namespace of the store,
``job_store.choice``), its revisions and its OpenAPI. What the group adds is what a caller sees
of all of them at once: which app a path names (fal's ``/<owner>/<app>/...``), one start and
stop for every app, and the fleet-wide ``/health``, ``/runners`` and ``/metrics`` with the app
of each runner. The GPUs are one pool for every app (``SharedGpuPool``, whose arbiter decides
which app's runners start or resume where; docs/gpu-pool.md): each app's scaler says how many
runners it wants, the pool starts and resumes them. A deploy goes to the app it names
(``deploy``): each app rolls its revisions out alone, the others serve on untouched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from minifal.compat.project import absolute_reference
from minifal.fleet.deployer import DeployRejected, LoadedApp, load_revision
from minifal.fleet.gateway import Gateway
from minifal.fleet.metrics import render_by_app
from minifal.fleet.revisions import Revision, Strategy
from minifal.fleet.shared_gpu_pool import SharedGpuPool

APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""An app name that can be a path segment, a directory and a runner id's prefix."""


FLEET_SEGMENTS = frozenset(
    {"health", "runners", "metrics", "files", "dashboard", "requests", "_minifal"}
)
"""First path segments of the fleet's own routes, never an owner (``/dashboard/api/...``
is the dashboard's even with an app named ``api``)."""


def app_in_path(path: str) -> str | None:
    """The ``<app>`` of ``/<owner>/<app>[/...]`` or ``/queue/<owner>/<app>[/...]``; None when
    the path names none (``/health``, ``/dashboard/static/x``, ``/``)."""
    parts = path.split("/")[1:]
    if parts[:1] and parts[0] in FLEET_SEGMENTS:
        return None
    if parts[:1] == ["queue"]:
        parts = parts[1:]
    return parts[1] if len(parts) >= 2 and parts[1] else None


def runner_prefix(app_name: str) -> str:
    """Runner ids of an app among several: ``<app>-runner-<n>``."""
    return f"{app_name}-runner"


def apps_served_from(reference: str, served: Mapping[str, str]) -> list[str]:
    """The apps (of ``served``: app name -> its serving revision's reference) that ``reference``
    names without loading it: the same reference, or the same file when it names no class
    (``two_apps.py`` for ``two_apps.py::FirstApp``). Relative paths are the gateway's."""
    wanted = absolute_reference(reference)
    same = [name for name, each in served.items() if absolute_reference(each) == wanted]
    if same or "::" in reference:
        return same
    return [
        name
        for name, each in served.items()
        if "::" in each and absolute_reference(each.partition("::")[0]) == wanted
    ]


def with_served_class(reference: str, served: str) -> str:
    """``reference`` with the class of the app's serving reference when it names the same
    file and no class (``two_apps.py`` deployed to the app of ``two_apps.py::FirstApp``)."""
    file_part, separator, class_name = served.partition("::")
    if not separator or "::" in reference:
        return reference
    same_file = absolute_reference(reference) == absolute_reference(file_part)
    return f"{reference}::{class_name}" if same_file else reference


class GatewayGroup:
    """The gateways of several apps (by app name, in the order given), started and stopped as
    one; each answers for its own app, the group for all of them."""

    def __init__(
        self, gateways: Mapping[str, Gateway], run_id: str, gpu_pool: SharedGpuPool
    ) -> None:
        """``gpu_pool``: the machine's GPUs (none on a CPU machine); every app joins it."""
        if len(gateways) < 2:
            raise ValueError("a gateway group serves two apps or more")
        for name in gateways:
            if not APP_NAME.fullmatch(name):
                raise ValueError(f"app name {name!r}: letters, digits, '.', '_' and '-' only")
        self.gateways = dict(gateways)
        self.run_id = run_id
        self.grace_seconds = max(gateway.grace_seconds for gateway in self.gateways.values())
        self.gpu_pool = gpu_pool
        for name, gateway in self.gateways.items():
            gpu_pool.join(name, gateway)

    def find(self, path: str) -> Gateway | None:
        """The gateway of the app ``path`` names, if it names one of this group's."""
        name = app_in_path(path)
        return self.gateways.get(name) if name is not None else None

    async def start(self) -> None:
        await asyncio.gather(*(gateway.start() for gateway in self.gateways.values()))
        await self.gpu_pool.start()

    def begin_shutdown(self) -> None:
        for gateway in self.gateways.values():
            gateway.begin_shutdown()

    async def stop(self) -> None:
        """The pool stops granting; then every app drains and stops at once (each within its
        own grace period)."""
        await self.gpu_pool.stop()
        results = await asyncio.gather(
            *(gateway.stop() for gateway in self.gateways.values()), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise failures[0]

    # -- deploys ---------------------------------------------------------------------------------

    async def deploy(
        self, reference: str | None, app_name: str | None, strategy: Strategy
    ) -> tuple[str, Revision]:
        """A new revision of the app that the deploy names, rolled out by that app's deployer:
        the app ``app_name``; else the app served from ``reference`` (``apps_served_from``);
        else the app that ``reference`` loads (its name, loaded here once). Returns the app's
        name and the revision. Raises ``DeployRejected``: 404 for an app not served here, 422
        when the deploy names none or several."""
        name, loaded = await self._deploy_target(reference, app_name)
        deployer = self.gateways[name].deployer
        if reference is not None and loaded is None:
            reference = with_served_class(reference, deployer.serving.app_reference)
        return name, await deployer.deploy(reference, strategy, loaded)

    async def _deploy_target(
        self, reference: str | None, app_name: str | None
    ) -> tuple[str, LoadedApp | None]:
        apps = ", ".join(self.gateways)
        if app_name is not None:
            if app_name not in self.gateways:
                raise DeployRejected(404, f"no app {app_name!r} here; the apps: {apps}")
            return app_name, None
        if reference is None:
            raise DeployRejected(
                422,
                f"this gateway serves several apps ({apps}): name the one to deploy "
                "(its file, or app_name: minifal deploy --app-name)",
            )
        served = {
            name: gateway.deployer.serving.app_reference for name, gateway in self.gateways.items()
        }
        named = apps_served_from(reference, served)
        if len(named) > 1:
            raise DeployRejected(
                422,
                f"{reference} serves several apps here ({', '.join(named)}): "
                "name one (FILE::Class, or app_name: minifal deploy --app-name)",
            )
        if named:
            return named[0], None
        first = next(iter(self.gateways.values()))
        loaded = await load_revision(reference, first.options.data_dir)
        found = loaded.manifest.app_name
        if found not in self.gateways:
            raise DeployRejected(404, f"{reference} is the app {found!r}, not one of: {apps}")
        return found, loaded

    # -- observability ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        apps = {name: gateway.health() for name, gateway in self.gateways.items()}
        return {
            "status": "ok",
            "apps": apps,
            "runners_ready": sum(app["runners_ready"] for app in apps.values()),
            "runners": sum(app["runners"] for app in apps.values()),
            "queue_size": sum(app["queue_size"] for app in apps.values()),
        }

    def live_runner_pids(self) -> set[int]:
        """Every app's runner processes that have not exited."""
        return set().union(*(gateway.live_runner_pids() for gateway in self.gateways.values()))

    def runners_table(self) -> dict[str, Any]:
        """Every app's runners in one table (each row's ``alias`` is its app, as on fal), and
        per app where its runners run and its revisions."""
        apps, rows = [], []
        for name, gateway in self.gateways.items():
            table = gateway.runners_table()
            rows += table["runners"]
            apps.append(
                {
                    "app": name,
                    "environment": table["environment"],
                    "revisions": table["revisions"],
                }
            )
        return {"apps": apps, "run_id": self.run_id, "runners": rows}

    def render_metrics(self) -> bytes:
        return render_by_app({name: gateway.metrics for name, gateway in self.gateways.items()})
