"""An app that declares its billable components and reports units per answer, as fal's
marketplace docs describe: ``x-fal-billable-units`` on the response."""

import fal
from fastapi import Response
from pydantic import BaseModel, Field


class PerCharacter:
    """A ``fal.BillingDeclaration``: the report schema of the endpoint's billable metrics."""

    def declaration(self) -> fal.BillingComponents:
        return {
            "version": 1,
            "schema_id": "priced-echo/characters/v1",
            "app": {"type": "object", "properties": {"characters": {"type": "integer"}}},
        }


class EchoInput(BaseModel):
    text: str = Field(examples=["hello"])


class EchoOutput(BaseModel):
    text: str


class PricedEcho(fal.App):
    max_concurrency = 1

    @fal.endpoint("/", billing=PerCharacter())
    def echo(self, input: EchoInput, response: Response) -> EchoOutput:
        response.headers["x-fal-billable-units"] = str(len(input.text))
        return EchoOutput(text=input.text)

    @fal.endpoint("/free")
    def free(self, input: EchoInput) -> EchoOutput:
        """Reports no units: billed per second of inference, as fal does."""
        return EchoOutput(text=input.text)
