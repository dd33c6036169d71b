"""Two tiny apps that answer differently (upper-case, reversed): several apps behind one
gateway, in process (tests/test_multi_app_routes.py, tests/test_multi_app_deploys.py)."""

from __future__ import annotations

from pydantic import BaseModel

import minifal as fal


class Words(BaseModel):
    text: str


class UpperApp(fal.App):
    @fal.endpoint("/")
    def upper(self, input: Words) -> Words:
        return Words(text=input.text.upper())


class ReverseApp(fal.App):
    @fal.endpoint("/")
    def reverse(self, input: Words) -> Words:
        return Words(text=input.text[::-1])

    @fal.endpoint("/twice")
    def twice(self, input: Words) -> Words:
        return Words(text=input.text * 2)
