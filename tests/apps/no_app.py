"""A file with models but no fal.App subclass: ``minifal serve`` must refuse it."""

from pydantic import BaseModel


class Input(BaseModel):
    prompt: str
