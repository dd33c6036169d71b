"""Several apps behind one gateway (``minifal run A B``): one ``Gateway`` per app, together.

Each app keeps everything a gateway of its own would have: its supervisor and runners, its
queue and scheduler, its scaling settings, its job store (its own namespace of the store,
``job_store.choice``), its revisions and its OpenAPI. What the group adds is what a caller sees
of all of them at once: which app a path names (fal's ``/<owner>/<app>/...``), one start and
stop for every app, and the fleet-wide ``/health``, ``/runners`` and ``/metrics`` with the app
of each runner. The GPUs are one pool for every app (``SharedGpuPool``, whose arbiter decides
which app's runners start or resume where; docs/gpu-pool.md): each app's scaler says how many
runners it wants, the pool starts and resumes them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from minifal.fleet.gateway import Gateway
from minifal.fleet.metrics import render_by_app
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
