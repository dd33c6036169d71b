"""A stand-in for SD-Turbo's batched path, for ``benchmarks/batching_answer_path.py``: the GPU
call is a sleep, so what is measured is everything else (the batcher, each answer's PNG and its
trip back through the runner, the gateway and the client).

A batch of ``n`` requests sleeps ``cost(n)`` under one lock (one "GPU"), ``cost`` interpolated
linearly between the points of ``$BATCHED_IMAGES_CALL_MS`` (``size:ms,...``; by default the
SD-Turbo pipeline calls at 512x512 measured in-process on an H200, BENCHMARKS.md section 14);
each request gets a 512x512 image of noise (random weights make noise too: PNG cannot shrink
it). ``$BATCHED_IMAGES_MODE``:

- ``encode``: batches of up to ``$BATCHED_IMAGES_MAX_BATCH``; each answer's PNG is written in its
  own request thread (``Image.from_pil``), as ``apps/sd_turbo.py`` does;
- ``stored``: the same batches, but every answer is one image stored at setup: the answer path
  without the PNG;
- ``single``: no batching, ``max_multiplexing = 3`` (SD-Turbo's default): one call per request.
"""

import itertools
import os
import threading
import time

import fal
import numpy as np
from fal.toolkit import Image
from pydantic import BaseModel, Field

try:
    from minifal.runner.batching import batched
except ImportError:  # not on minifal: no batching (the benchmark runs on minifal)
    batched = None

MODE = os.environ.get("BATCHED_IMAGES_MODE", "encode")
MAX_BATCH = int(os.environ.get("BATCHED_IMAGES_MAX_BATCH", "16"))
CALL_MS = os.environ.get("BATCHED_IMAGES_CALL_MS", "1:20.6,2:32.4,4:56.9,8:95.3,16:145.2")
SIDE = 512


def call_costs(text: str) -> list[tuple[int, float]]:
    """``"1:22,16:160"`` -> [(1, 22.0), (16, 160.0)], sorted by size."""
    points = sorted((int(size), float(ms)) for size, ms in (p.split(":") for p in text.split(",")))
    if not points or points[0][0] != 1:
        raise ValueError(f"BATCHED_IMAGES_CALL_MS={text!r}: expected points from size 1 on")
    return points


def call_seconds(size: int, points: list[tuple[int, float]]) -> float:
    """The interpolated cost of a call of ``size`` (beyond the last point: its cost per image)."""
    for (low, low_ms), (high, high_ms) in itertools.pairwise(points):
        if low <= size <= high:
            return (low_ms + (high_ms - low_ms) * (size - low) / (high - low)) / 1000
    last, last_ms = points[-1]
    return last_ms * size / last / 1000


class Input(BaseModel):
    prompt: str = Field(min_length=1)
    seed: int = 0


class Output(BaseModel):
    image: Image
    seed: int


class BatchedImages(fal.App):
    max_multiplexing = 3 if MODE == "single" else 2 * MAX_BATCH

    def setup(self) -> None:
        self.gpu = threading.Lock()
        self.points = call_costs(CALL_MS)
        rng = np.random.default_rng(0)
        self.noise = [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8) for _ in range(4)]
        self.stored = Image.from_pil(self.pictures(1, sleep=False)[0])
        if batched is not None:
            self.generate_batch.set_max_batch_size(MAX_BATCH)

    def pictures(self, count: int, sleep: bool = True) -> list:
        from PIL import Image as PILImage

        if sleep:
            with self.gpu:
                time.sleep(call_seconds(count, self.points))
        return [PILImage.fromarray(self.noise[i % len(self.noise)]) for i in range(count)]

    def answer(self, inputs: list[Input]) -> list:
        if MODE == "stored":
            self.pictures(len(inputs))
            return [self.stored] * len(inputs)
        return self.pictures(len(inputs))

    if batched is not None:
        generate_batch = batched(max_batch_size=MAX_BATCH, batch_timeout_ms=0)(answer)

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        picture = self.pictures(1)[0] if MODE == "single" else self.generate_batch(input)
        image = picture if isinstance(picture, Image) else Image.from_pil(picture)
        return Output(image=image, seed=input.seed)
