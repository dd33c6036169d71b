"""The app of fal's "Realtime Endpoints" page, with the streaming-input endpoints it describes.

As on the page: a regular HTTP endpoint at ``/``, a raw websocket at ``/ws`` and a
``@fal.realtime("/realtime")`` endpoint (``fal_client.realtime()`` connects to ``/realtime``).
Added: two realtime endpoints whose input is a stream of frames, the shapes fal infers from the
type hints: ``/realtime/echo`` answers each frame as it arrives (bidirectional) and
``/realtime/sum`` answers once, with the running sum, when the client stops sending
(client streaming; the stream ends after ``session_timeout`` seconds without a frame).
"""

from collections.abc import AsyncIterator

import fal
from fastapi import WebSocket
from pydantic import BaseModel, Field


class Input(BaseModel):
    prompt: str = Field()


class Output(BaseModel):
    output: str = Field()


class Number(BaseModel):
    value: float = Field(description="A number to add to the running sum.")


class Sum(BaseModel):
    total: float
    count: int


class RealtimeApp(fal.App):
    machine_type = "S"

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=input.prompt)

    @fal.endpoint("/ws", is_websocket=True)
    async def generate_ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(3):
            await websocket.send_json({"message": "Hello world!"})
        await websocket.close()

    @fal.realtime("/realtime")
    def generate_rt(self, input: Input) -> Output:
        return Output(output=input.prompt)

    @fal.realtime("/realtime/echo")
    async def echo_frames(self, inputs: AsyncIterator[Input]) -> AsyncIterator[Output]:
        async for input in inputs:
            yield Output(output=input.prompt)

    @fal.realtime("/realtime/sum", session_timeout=2)
    async def running_sum(self, inputs: AsyncIterator[Number]) -> Sum:
        total, count = 0.0, 0
        async for number in inputs:
            total += number.value
            count += 1
        return Sum(total=total, count=count)
