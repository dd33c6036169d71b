"""A streaming app for the reliability benchmark: server-sent events and a plain JSON call."""

import json
from collections.abc import Iterator

import fal
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field


class CountInput(BaseModel):
    count: int = Field(default=3, ge=0, le=50)
    prefix: str = Field(default="n", max_length=100)


class CountOutput(BaseModel):
    items: list[str]


class StreamApp(fal.App):
    max_multiplexing = 4

    @fal.endpoint("/stream")
    def stream(self, input: CountInput) -> StreamingResponse:
        def events() -> Iterator[str]:
            for number in range(input.count):
                yield f"data: {json.dumps({'item': f'{input.prefix}{number}'})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @fal.endpoint("/")
    def count(self, input: CountInput) -> CountOutput:
        return CountOutput(items=[f"{input.prefix}{n}" for n in range(input.count)])
