"""fal's SD-Turbo example (the "compiled caches" page), as it runs on minifal.

The same file deploys on fal: ``Input``/``Output``, ``SDTurbo(fal.App)`` with fal's settings,
``setup()`` that loads the pipeline and compiles the UNet inside
``synchronized_inductor_cache("sd-turbo/v1")`` while warming up the sizes it serves, and one
endpoint that makes an image in one step with guidance 0.

Weights (``MINIFAL_SD_WEIGHTS``, see ``sd_turbo_pipeline.py``): ``stabilityai/sd-turbo`` from the
Hugging Face cache on a GPU when it is there, else the exact architecture with random weights on
a GPU, else a tiny random pipeline on CPU. Random weights give noise images and real timings.

Compilation (``MINIFAL_SD_COMPILE``): ``static`` (one full-graph compile per warmup size; the
default on a GPU), ``regional`` (diffusers' compile_repeated_blocks with dynamic shapes: one
quick compile covers every size; the default on CPU), ``dynamic`` (fal's page:
``torch.compile(dynamic=True)``, slowest to compile) or ``none``. BENCHMARKS.md has the
measurements behind the defaults. After warmup, dynamo is set to run
eagerly rather than recompile: a size not covered by the warmup still works, without a
multi-second recompile inside a request, and the log says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time

import fal
from fal.toolkit import Image, synchronized_inductor_cache
from pydantic import BaseModel, Field, field_validator

logger = logging.getLogger("sd_turbo")

COMPILE_ENV = "MINIFAL_SD_COMPILE"
COMPILE_STRATEGIES = ("regional", "static", "dynamic", "none")
# Measured (BENCHMARKS.md): on a GPU, static graphs run a step 20-40% faster than regional
# or eager, and the shared cache makes their slower cold compile a once-per-version cost; on CPU,
# compiling does not speed the tiny model up, so regional's quicker compile wins.
DEFAULT_COMPILE = {"cuda": "static", "cpu": "regional"}
WARMUP_SIZES = ((512, 512), (768, 512))
MIN_SIDE, MAX_SIDE = 256, 1024
MAX_SEED = 2**32 - 1


def model_name(source: str) -> str:
    """A cache-key part for the weights source: its name, or a local directory's short hash."""
    if source in ("hub", "random-full", "random-tiny"):
        return source
    return "dir-" + hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:12]


class Input(BaseModel):
    prompt: str = Field(
        description="The prompt to generate an image from.",
        examples=["A cinematic shot of a baby racoon wearing an intricate italian priest robe."],
        min_length=1,
        max_length=2000,
    )
    width: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED, description="Same seed, same prompt: same image."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt must not be blank")
        return prompt


class Output(BaseModel):
    image: Image
    seed: int
    timings: dict[str, float]


class SDTurbo(fal.App):
    machine_type = "GPU-H100"
    keep_alive = 300
    startup_timeout = 900
    requirements = ["torch>=2.5", "diffusers>=0.31", "transformers", "accelerate"]

    def setup(self) -> None:
        import torch
        from sd_turbo_pipeline import load_sd_turbo_pipeline

        loaded = load_sd_turbo_pipeline()
        self.pipeline = loaded.pipeline
        self.device = self.pipeline.device
        self.lock = threading.Lock()  # one pipeline, one generation at a time
        strategy = os.environ.get(COMPILE_ENV) or DEFAULT_COMPILE.get(self.device.type, "regional")
        if strategy not in COMPILE_STRATEGIES:
            raise ValueError(f"{COMPILE_ENV}={strategy!r}: expected one of {COMPILE_STRATEGIES}")
        self.covered_sizes = set(WARMUP_SIZES)
        self.dynamic_shapes = strategy in ("regional", "dynamic")
        logger.info("pipeline: %s; compile: %s", loaded.description, strategy)

        # The key names what was compiled: another model or strategy is another artifact.
        cache_key = f"sd-turbo/v1/{model_name(loaded.source)}/{strategy}"
        with synchronized_inductor_cache(cache_key):
            if strategy == "regional":
                self.pipeline.unet.compile_repeated_blocks(fullgraph=True, dynamic=True)
            elif strategy in ("static", "dynamic"):
                self.pipeline.unet = torch.compile(
                    self.pipeline.unet, mode="default", dynamic=strategy == "dynamic"
                )
            for width, height in WARMUP_SIZES:
                start = time.perf_counter()
                self.generate_image("warmup", width, height, seed=0)
                logger.info("warmup %dx%d: %.1f s", width, height, time.perf_counter() - start)
        if strategy != "none":
            # fal's example swaps in torch._dynamo.run for the same purpose: no recompiles now.
            torch.compiler.set_stance("eager_on_recompile")

    def generate_image(self, prompt: str, width: int, height: int, seed: int):
        import torch

        generator = torch.Generator(device=self.device).manual_seed(seed)
        with self.lock, torch.inference_mode():
            result = self.pipeline(
                prompt=prompt,
                width=width,
                height=height,
                num_inference_steps=1,
                guidance_scale=0.0,
                generator=generator,
            )
        return result.images[0]

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        size = (input.width, input.height)
        if size not in self.covered_sizes and not self.dynamic_shapes:
            logger.warning("%dx%d was not warmed up: runs eagerly (no recompile)", *size)
        seed = input.seed if input.seed is not None else random.randint(0, MAX_SEED)
        start = time.perf_counter()
        picture = self.generate_image(input.prompt, input.width, input.height, seed)
        inference = time.perf_counter() - start
        return Output(image=Image.from_pil(picture), seed=seed, timings={"inference": inference})
