"""``GET /requests/{request_id}/logs``: a request's log lines by its id, whichever door it came
in (a sync call's id is the ``x-fal-request-id`` of its answer, as on fal), in fal's fields."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from minifal.fleet.request_logs import RequestLogs


def request_logs_router(*apps_logs: RequestLogs) -> APIRouter:
    """The route over each app's logs (one app's, or every app's of a gateway that serves
    several: request ids are unique across them)."""
    router = APIRouter()

    @router.get("/requests/{request_id}/logs")
    async def request_logs(request_id: str) -> Response:
        logs = next((logs for logs in apps_logs if logs.knows(request_id)), None)
        if logs is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        return JSONResponse({"request_id": request_id, "logs": logs.fal_logs(request_id)})

    return router
