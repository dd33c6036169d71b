"""The endpoint every server in benchmarks/http_overhead.py serves: JSON in, JSON out."""

import fal
from pydantic import BaseModel


class Input(BaseModel):
    text: str


class Output(BaseModel):
    text: str


class Echo(fal.App):
    @fal.endpoint("/")
    def echo(self, input: Input) -> Output:
        return Output(text=input.text)
