"""A GPU app that holds ~1 GiB on the GPU and a compiled kernel, and scales to zero at once:
what the suspension GPU test suspends and resumes (tests/test_suspension_gpu.py)."""

import fal
from pydantic import BaseModel


class Query(BaseModel):
    seed: int = 0


class Answer(BaseModel):
    checksum: float
    gpu_bytes: int
    captures: int = 0


class Suspendable(fal.App):
    machine_type = "GPU-H100"
    keep_alive = 1
    min_concurrency = 0
    max_concurrency = 1

    def setup(self) -> None:
        import torch

        self.torch = torch
        self.weights = torch.randn(16384, 16384, device="cuda", generator=None)  # 1 GiB fp32
        self.step = torch.compile(lambda x, w: torch.tanh(x @ w).sum())

    @fal.endpoint("/")
    def run(self, query: Query) -> Answer:
        torch = self.torch
        generator = torch.Generator(device="cuda").manual_seed(query.seed)
        x = torch.randn(64, 16384, device="cuda", generator=generator)
        value = float(self.step(x, self.weights))
        return Answer(checksum=value, gpu_bytes=torch.cuda.memory_allocated())


class SleepySuspendable(Suspendable):
    """The same, its weights in an arena (``minifal.offload``): suspended, it first sleeps on
    its GPU (its weights in pinned host memory), then the driver's checkpoint takes the rest."""

    def setup(self) -> None:
        from minifal.offload.suspension import keep_addresses

        super().setup()
        holder = self.torch.nn.Module()
        holder.register_buffer("weights", self.weights)
        assert keep_addresses(holder) is not None, "no arena on this GPU (the log says why)"
        self.weights = holder.weights  # the arena's tensor, at its fixed address


class GraphedSuspendable(SleepySuspendable):
    """The same, its step a ``cuda_graphed`` module (one CUDA graph, replayed): its checkpoint
    after the sleep first drops the graph, which the next call captures again."""

    def setup(self) -> None:
        from minifal.compiled.cuda_graphs import cuda_graphed

        super().setup()
        torch = self.torch

        class Tower(torch.nn.Module):
            def __init__(self, weights: torch.Tensor) -> None:
                super().__init__()
                self.register_buffer("weights", weights)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.tanh(x @ self.weights).sum()

        self.tower = cuda_graphed(Tower(self.weights))

    @fal.endpoint("/")
    def run(self, query: Query) -> Answer:
        torch = self.torch
        generator = torch.Generator(device="cuda").manual_seed(query.seed)
        x = torch.randn(64, 16384, device="cuda", generator=generator)
        with torch.inference_mode():
            value = float(self.tower(x))
        return Answer(
            checksum=value, gpu_bytes=torch.cuda.memory_allocated(), captures=self.tower.captures
        )
