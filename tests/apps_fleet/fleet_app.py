"""A small fal-style app for the fleet tests: it says which runner served each request.

``/`` sleeps for the asked time and answers the runner id (``MINIFAL_RUNNER_ID``) and when it
started; ``/stream`` is SSE, ``/ticks`` SSE without end; ``/file`` stores a file; ``/ws`` is a
raw websocket and ``/realtime`` a realtime endpoint.
``teardown()`` writes ``<data dir>/teardown-<runner id>`` so the tests see it ran in every runner.
"""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import fal
from fal.toolkit import File
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field


def runner_id() -> str:
    return os.environ.get("MINIFAL_RUNNER_ID", "unknown")


class SleepInput(BaseModel):
    seconds: float = Field(default=0.0, ge=0, le=30)
    tag: str = ""


class SleepOutput(BaseModel):
    runner_id: str
    tag: str
    request_id: str
    started_at: float


class CountInput(BaseModel):
    count: int = Field(default=3, ge=0, le=100)


class FileInput(BaseModel):
    text: str


class FileOutput(BaseModel):
    file: File


class RealtimeInput(BaseModel):
    prompt: str


class RealtimeOutput(BaseModel):
    text: str
    runner_id: str


class FleetApp(fal.App):
    machine_type = "S"

    def setup(self) -> None:
        self.runner_id = runner_id()

    def teardown(self) -> None:
        data_dir = Path(os.environ["MINIFAL_DATA_DIR"])
        (data_dir / f"teardown-{self.runner_id}").write_text(str(os.getpid()))

    @fal.endpoint("/")
    def sleep(self, input: SleepInput) -> SleepOutput:
        started_at = time.time()
        time.sleep(input.seconds)
        return SleepOutput(
            runner_id=self.runner_id,
            tag=input.tag,
            request_id=self.current_request.request_id,
            started_at=started_at,
        )

    @fal.endpoint("/stream")
    def stream(self, input: CountInput) -> StreamingResponse:
        def events() -> Iterator[str]:
            for index in range(input.count):
                yield f"data: {json.dumps({'index': index, 'runner_id': self.runner_id})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @fal.endpoint("/ticks")
    def ticks(self) -> StreamingResponse:
        """SSE that never ends by itself: it stops when the caller goes away."""

        def events() -> Iterator[str]:
            index = 0
            while True:
                yield f"data: {json.dumps({'index': index})}\n\n"
                index += 1
                time.sleep(0.05)

        return StreamingResponse(events(), media_type="text/event-stream")

    @fal.endpoint("/file")
    def file(self, input: FileInput) -> FileOutput:
        return FileOutput(file=File.from_bytes(input.text.encode(), "text/plain", "note.txt"))

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            try:
                message = await websocket.receive_text()
            except WebSocketDisconnect:
                return
            await websocket.send_text(f"echo: {message}")

    @fal.realtime("/realtime")
    def realtime(self, input: RealtimeInput) -> RealtimeOutput:
        return RealtimeOutput(text=input.prompt.upper(), runner_id=self.runner_id)
