"""A JSON app for the reliability benchmark: constrained, nested and optional fields, and a
short sleep (requests in flight for the shutdown and soak figures)."""

import time
from typing import Literal

import fal
from pydantic import BaseModel, Field


class Point(BaseModel):
    x: float = Field(ge=-1e6, le=1e6)
    y: float = Field(ge=-1e6, le=1e6)


class ShapeInput(BaseModel):
    name: str = Field(max_length=200)
    kind: Literal["polygon", "polyline"] = "polygon"
    points: list[Point] = Field(default_factory=list, max_length=100)
    scale: float = Field(default=1.0, gt=0, le=100)
    tags: dict[str, str] | None = None


class ShapeOutput(BaseModel):
    name: str
    kind: str
    count: int
    width: float
    height: float


class EchoInput(BaseModel):
    text: str = Field(max_length=10_000)
    repeat: int = Field(default=1, ge=1, le=10)


class EchoOutput(BaseModel):
    text: str


class SleepInput(BaseModel):
    seconds: float = Field(default=0.0, ge=0, le=2)


class SleepOutput(BaseModel):
    slept: float


class JsonApp(fal.App):
    max_multiplexing = 8
    termination_grace_period_seconds = 10

    @fal.endpoint("/sleep")
    def sleep(self, input: SleepInput) -> SleepOutput:
        time.sleep(input.seconds)
        return SleepOutput(slept=input.seconds)

    @fal.endpoint("/")
    def shape(self, input: ShapeInput) -> ShapeOutput:
        xs = [p.x * input.scale for p in input.points] or [0.0]
        ys = [p.y * input.scale for p in input.points] or [0.0]
        return ShapeOutput(
            name=input.name,
            kind=input.kind,
            count=len(input.points),
            width=max(xs) - min(xs),
            height=max(ys) - min(ys),
        )

    @fal.endpoint("/echo")
    def echo(self, input: EchoInput) -> EchoOutput:
        return EchoOutput(text=" ".join([input.text] * input.repeat))
