"""The gateway's administration routes, under ``/_minifal/`` (``minifal deploy`` talks to them):

  POST /_minifal/deploy                 {"app": "path/to/app.py" | null, "app_name": null,
                                         "strategy": "rolling"}
                                        -> 202 the new revision (200: the content is unchanged)
  GET  /_minifal/revisions              every revision kept, which serves, which rolls out
  GET  /_minifal/revisions/{revision}   one revision

A gateway of several apps (``group_admin_router``) takes the same deploy and routes it to the app
it names (``GatewayGroup.deploy``); its answers carry ``app_name``, and ``?app_name=NAME`` picks
an app's revisions (``GET /_minifal/revisions`` without it: every app's).

A deploy runs the code at a path of the gateway's machine: without ``--auth-key`` only clients
on loopback may ask for one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from minifal.fleet.deployer import Deployer, DeployRejected
from minifal.fleet.gateway_group import GatewayGroup
from minifal.fleet.revisions import Revision, RevisionStatus, Strategy

ADMIN_PREFIX = "/_minifal/"


class DeployRequest(BaseModel):
    app: str | None = Field(
        None,
        description="the app reference on the gateway's machine (default: the serving one's)",
    )
    app_name: str | None = Field(
        None,
        description="the app to deploy, by name: one of a gateway's several apps (a gateway "
        "of one app checks that it is its own)",
    )
    strategy: Strategy = Strategy.ROLLING


def from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refused_from_afar(request: Request, auth_key_required: bool) -> JSONResponse | None:
    """The 403 of a deploy from another machine to a gateway without ``--auth-key``."""
    if auth_key_required or from_loopback(request):
        return None
    return JSONResponse(
        {"detail": "deploys come from loopback unless the gateway has --auth-key"}, 403
    )


def rejected(exc: DeployRejected) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "problems": list(exc.problems)}, exc.status)


def deployed(revision: Revision, **more: str) -> JSONResponse:
    """202 with the new revision; 200 when the content was unchanged (the serving one)."""
    unchanged = revision.status is RevisionStatus.SERVING
    return JSONResponse(
        {**revision.to_json(), **more, "unchanged": unchanged}, 200 if unchanged else 202
    )


def build_admin_app(deployer: Deployer, auth_key_required: bool) -> FastAPI:
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.post("/_minifal/deploy")
    async def deploy(body: DeployRequest, request: Request) -> JSONResponse:
        refused = refused_from_afar(request, auth_key_required)
        if refused is not None:
            return refused
        if body.app_name is not None and body.app_name != deployer.app_name:
            detail = f"no app {body.app_name!r} here; this gateway serves {deployer.app_name}"
            return JSONResponse({"detail": detail}, 404)
        try:
            return deployed(await deployer.deploy(body.app, body.strategy))
        except DeployRejected as exc:
            return rejected(exc)

    @api.get("/_minifal/revisions")
    async def revisions() -> dict[str, Any]:
        return deployer.to_json()

    @api.get("/_minifal/revisions/{revision_id}")
    async def revision(revision_id: str) -> JSONResponse:
        found = deployer.find(revision_id)
        if found is None:
            return JSONResponse({"detail": f"no revision {revision_id}"}, 404)
        return JSONResponse(found.to_json())

    return api


class AdminRoutes:
    """``/_minifal/...`` to the administration app, everything else to the gateway's routes
    (ahead of its sync calls, which take any other POST)."""

    def __init__(self, app: ASGIApp, deployer: Deployer, auth_key_required: bool) -> None:
        self.app = app
        self.admin = build_admin_app(deployer, auth_key_required)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ADMIN_PREFIX):
            await self.admin(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# -- several apps --------------------------------------------------------------------------------


def group_admin_router(group: GatewayGroup, auth_key_required: bool) -> APIRouter:
    """The routes above for a gateway of several apps (the fleet's routes include them)."""
    router = APIRouter()
    apps = ", ".join(group.gateways)

    def no_app(name: str) -> JSONResponse:
        return JSONResponse({"detail": f"no app {name!r} here; the apps: {apps}"}, 404)

    @router.post("/_minifal/deploy")
    async def deploy(body: DeployRequest, request: Request) -> JSONResponse:
        refused = refused_from_afar(request, auth_key_required)
        if refused is not None:
            return refused
        try:
            name, revision = await group.deploy(body.app, body.app_name, body.strategy)
        except DeployRejected as exc:
            return rejected(exc)
        return deployed(revision, app_name=name)

    @router.get("/_minifal/revisions")
    async def revisions(app_name: str | None = None) -> JSONResponse:
        if app_name is None:
            every = {name: gateway.deployer.to_json() for name, gateway in group.gateways.items()}
            return JSONResponse({"apps": every})
        gateway = group.gateways.get(app_name)
        if gateway is None:
            return no_app(app_name)
        return JSONResponse({"app_name": app_name, **gateway.deployer.to_json()})

    @router.get("/_minifal/revisions/{revision_id}")
    async def revision(revision_id: str, app_name: str | None = None) -> JSONResponse:
        if app_name is not None and app_name not in group.gateways:
            return no_app(app_name)
        found = [
            (name, each)
            for name in ([app_name] if app_name is not None else group.gateways)
            if (each := group.gateways[name].deployer.find(revision_id)) is not None
        ]
        if not found:
            return JSONResponse({"detail": f"no revision {revision_id}"}, 404)
        if len(found) > 1:
            names = ", ".join(name for name, _ in found)
            detail = f"apps {names} each have a revision {revision_id}: ask with ?app_name=NAME"
            return JSONResponse({"detail": detail}, 422)
        name, one = found[0]
        return JSONResponse({"app_name": name, **one.to_json()})

    return router
