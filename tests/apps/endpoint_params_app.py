"""Endpoints that take what FastAPI injects next to their input model, as fal endpoints can
(they are FastAPI routes): Request, Response, BackgroundTasks, Header, Query, Body, Depends.

``from __future__ import annotations`` on purpose: every hint below is a string that the
runner must resolve in this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import fal
from fastapi import (
    BackgroundTasks,
    Body,
    Depends,
    Header,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from pydantic import BaseModel, Field


class Input(BaseModel):
    prompt: str = Field(description="What to echo.", examples=["a cat"])
    steps: int = Field(default=1, ge=1, le=10)


class Output(BaseModel):
    text: str
    details: dict[str, str | int | bool | None] = {}


def api_version(x_api_version: str = Header(default="1")) -> str:
    """A dependency with its own injected header."""
    return f"v{x_api_version}"


def note_path(name: str) -> Path:
    return Path(os.environ["MINIFAL_DATA_DIR"]) / f"{name}.txt"


def write_note(name: str, text: str) -> None:
    note_path(name).write_text(text)


class ParamsApp(fal.App):
    machine_type = "S"

    @fal.endpoint("/request")
    def with_request(self, input: Input, request: Request) -> Output:
        return Output(
            text=input.prompt,
            details={
                "path": request.url.path,
                "method": request.method,
                "x_custom": request.headers.get("x-custom"),
                "request_id": self.current_request.request_id,
            },
        )

    @fal.endpoint("/request/async")
    async def with_request_async(self, request: Request, input: Input) -> Output:
        body = await request.json()
        return Output(text=input.prompt, details={"raw_prompt": body["prompt"]})

    @fal.endpoint("/response")
    def with_response(self, input: Input, response: Response) -> Output:
        response.headers["x-fal-billable-units"] = str(input.steps)
        response.status_code = 201
        return Output(text=input.prompt)

    @fal.endpoint("/background")
    def with_background(self, input: Input, background_tasks: BackgroundTasks) -> Output:
        background_tasks.add_task(write_note, "background", input.prompt)
        return Output(text=input.prompt)

    @fal.endpoint("/header")
    async def with_header(
        self,
        input: Input,
        x_user: str = Header(),
        x_count: int = Header(default=0, ge=0),
    ) -> Output:
        return Output(text=input.prompt, details={"user": x_user, "count": x_count})

    @fal.endpoint("/query")
    def with_query(
        self,
        input: Input,
        verbose: bool = Query(default=False),
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> Output:
        return Output(text=input.prompt, details={"verbose": verbose, "limit": limit})

    @fal.endpoint("/body")
    def with_body(self, input: Input, seed: int = Body(ge=0)) -> Output:
        return Output(text=input.prompt, details={"seed": seed})

    @fal.endpoint("/depends")
    def with_depends(self, input: Input, version: str = Depends(api_version)) -> Output:
        return Output(text=input.prompt, details={"version": version})

    @fal.endpoint("/ws", is_websocket=True)
    async def websocket_with_query(
        self, websocket: WebSocket, token: str = Query(default="none")
    ) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"{token}: {text}")
        except WebSocketDisconnect:
            return
