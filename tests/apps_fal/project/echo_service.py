"""An app found by ``python_entry_point = "echo_service:EntryEcho"`` (module:symbol)."""

import fal
from pydantic import BaseModel


class Text(BaseModel):
    text: str


class EntryEcho(fal.App):
    @fal.endpoint("/")
    def echo(self, input: Text) -> Text:
        return Text(text=input.text)
