"""fal's multi-GPU example ("Parallel SDXL", from fal's distributed overview and its multi-GPU
inference tutorial), written as those pages show it, with a tiny random-weight image model in
place of SDXL so that it runs anywhere and downloads nothing.

Every rank generates an image from the same prompt with its own seed (``seed + rank``) on its
own device; rank 0 gathers them with ``dist.gather`` and returns them side by side. ``/stream``
sends a preview of the gathered images every few steps (``add_streaming_result``) as
Server-Sent Events, then the final grid. On a machine with 2 GPUs each rank has one (NCCL); on
a CPU the ranks run on the CPU (gloo).
"""

import zlib
from typing import Any

import fal
from fal.distributed import DistributedRunner, DistributedWorker
from fal.toolkit import File, Image
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field


def tensors_to_image_grid(tensors: list[Any]) -> Any:
    """Images (3 x H x W, values in [0, 1]) side by side, as one PIL image."""
    import torch
    from PIL import Image as PILImage

    grid = torch.cat([tensor.detach().float().cpu() for tensor in tensors], dim=2)
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return PILImage.fromarray(pixels.numpy())


class TinyDenoiser:
    """A few random convolutions: an image model small enough for any CPU."""

    def __init__(self, device: Any) -> None:
        import torch

        torch.manual_seed(0)  # the same weights on every rank
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.Conv2d(16, 3, 3, padding=1),
        ).to(device)
        self.device = device

    def __call__(self, prompt: str, seed: int, size: int, steps: int, callback=None) -> Any:
        import torch

        generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode()) + seed)
        latents = torch.randn(1, 3, size // 8, size // 8, generator=generator).to(self.device)
        with torch.no_grad():
            for step in range(steps):
                latents = latents - 0.1 * self.net(latents)
                if callback is not None:
                    callback(step, latents)
            image = torch.nn.functional.interpolate(latents, size=(size, size), mode="nearest")
        return torch.sigmoid(image[0])


class ExampleDistributedWorker(DistributedWorker):
    """Runs the model on every GPU, each with its own seed; rank 0 returns the grid."""

    def setup(self, **kwargs: Any) -> None:
        self.model = TinyDenoiser(self.device)
        self.rank_print(f"tiny model ready on {self.device}")

    def gather_grid(self, image: Any) -> Any:
        """Every rank's image, side by side, on rank 0 (None elsewhere)."""
        import torch
        import torch.distributed as dist

        gather_list = None
        if self.rank == 0:
            gather_list = [torch.zeros_like(image) for _ in range(self.world_size)]
        dist.gather(image, gather_list, dst=0)
        return tensors_to_image_grid(gather_list) if gather_list else None

    def __call__(
        self,
        streaming: bool = False,
        prompt: str = "A fantasy landscape",
        seed: int = 0,
        image_size: int = 64,
        num_inference_steps: int = 8,
        **kwargs: Any,
    ) -> dict[str, Any]:
        import torch
        import torch.distributed as dist

        def preview(step: int, latents: "torch.Tensor") -> None:
            if step % 4 != 0:
                return
            small = torch.sigmoid(latents[0])
            grid = self.gather_grid(small)
            if grid is not None:
                self.add_streaming_result({"step": step, "image": grid}, as_text_event=True)
            dist.barrier()

        image = self.model(
            prompt,
            seed + self.rank,
            image_size,
            num_inference_steps,
            callback=preview if streaming else None,
        )
        grid = self.gather_grid(image)
        if grid is None:
            return {}  # only rank 0's result goes back
        return {"image": grid, "num_gpus": self.world_size}


class ExampleRequest(BaseModel):
    prompt: str = Field(description="What to draw", examples=["a red fox in the snow"])
    seed: int = Field(default=0, ge=0)
    image_size: int = Field(default=64, ge=16, le=256, multiple_of=8)
    num_inference_steps: int = Field(default=8, ge=1, le=50)


class ExampleResponse(BaseModel):
    image: File = Field(description="One image per GPU, side by side")
    num_gpus: int


class ExampleDistributedApp(fal.App):
    machine_type = "GPU-H100"
    num_gpus = 2
    requirements = ["torch", "pillow"]

    async def setup(self) -> None:
        self.runner = DistributedRunner(
            worker_cls=ExampleDistributedWorker,
            world_size=self.num_gpus,
        )
        await self.runner.start()
        warmup = await self.runner.invoke(ExampleRequest(prompt="a cat wearing a hat").dict())
        assert "image" in warmup, "Warm-up failed, no image returned from the worker"

    @fal.endpoint("/")
    async def run(self, request: ExampleRequest) -> ExampleResponse:
        result = await self.runner.invoke(request.dict())
        assert "image" in result, "No image returned from the worker"
        return ExampleResponse(image=Image.from_pil(result["image"]), num_gpus=result["num_gpus"])

    @fal.endpoint("/stream")
    async def stream(self, request: ExampleRequest) -> StreamingResponse:
        return StreamingResponse(
            self.runner.stream(request.dict(), as_text_events=True),
            media_type="text/event-stream",
        )
