"""The echo app with max_multiplexing=8: one runner takes 8 requests at once."""

import fal
from pydantic import BaseModel


class Input(BaseModel):
    text: str


class Output(BaseModel):
    text: str


class Echo(fal.App, max_multiplexing=8):
    @fal.endpoint("/")
    def echo(self, input: Input) -> Output:
        return Output(text=input.text)
