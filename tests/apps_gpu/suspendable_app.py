"""A GPU app that holds ~1 GiB on the GPU and a compiled kernel, and scales to zero at once:
what the suspension GPU test suspends and resumes (tests/test_suspension_gpu.py)."""

import fal
from pydantic import BaseModel


class Query(BaseModel):
    seed: int = 0


class Answer(BaseModel):
    checksum: float
    gpu_bytes: int


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
