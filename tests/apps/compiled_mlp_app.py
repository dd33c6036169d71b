"""An App whose ``setup()`` compiles a small MLP inside ``synchronized_inductor_cache`` and warms
it up, as fal's compiled-cache example does with a real model: the shared cache across runners
(or Ray nodes) in seconds of CPU, where the SD-Turbo app takes minutes."""

import fal
import torch
from fal.toolkit import synchronized_inductor_cache
from pydantic import BaseModel, Field


class Input(BaseModel):
    values: list[float] = Field(min_length=16, max_length=16)


class Output(BaseModel):
    scores: list[float]


class CompiledMlpApp(fal.App):
    def setup(self) -> None:
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)
        ).eval()
        with synchronized_inductor_cache("tests/compiled-mlp/v1"):
            self.model = torch.compile(mlp, dynamic=False)
            with torch.no_grad():
                self.model(torch.zeros(1, 16))

    @fal.endpoint("/")
    def run(self, request: Input) -> Output:
        with torch.no_grad():
            scores = self.model(torch.tensor([request.values]))
        return Output(scores=scores[0].tolist())
