"""The gateway's administration routes, under ``/_minifal/`` (``minifal deploy`` talks to them):

  POST /_minifal/deploy                 {"app": "path/to/app.py" | null, "strategy": "rolling"}
                                        -> 202 the new revision (200: the content is unchanged)
  GET  /_minifal/revisions              every revision kept, which serves, which rolls out
  GET  /_minifal/revisions/{revision}   one revision

A deploy runs the code at a path of the gateway's machine: without ``--auth-key`` only clients
on loopback may ask for one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from minifal.fleet.deployer import Deployer, DeployRejected
from minifal.fleet.revisions import RevisionStatus, Strategy

ADMIN_PREFIX = "/_minifal/"


class DeployRequest(BaseModel):
    app: str | None = Field(
        None,
        description="the app reference on the gateway's machine (default: the serving one's)",
    )
    strategy: Strategy = Strategy.ROLLING


def from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_admin_app(deployer: Deployer, auth_key_required: bool) -> FastAPI:
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.post("/_minifal/deploy")
    async def deploy(body: DeployRequest, request: Request) -> JSONResponse:
        if not auth_key_required and not from_loopback(request):
            return JSONResponse(
                {"detail": "deploys come from loopback unless the gateway has --auth-key"}, 403
            )
        try:
            revision = await deployer.deploy(body.app, body.strategy)
        except DeployRejected as exc:
            return JSONResponse({"detail": exc.detail, "problems": list(exc.problems)}, exc.status)
        unchanged = revision.status is RevisionStatus.SERVING
        return JSONResponse(
            {**revision.to_json(), "unchanged": unchanged}, 200 if unchanged else 202
        )

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
