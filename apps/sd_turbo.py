"""fal's SD-Turbo example (the "compiled caches" page), as it runs on minifal.

The same file deploys on fal: ``Input``/``Output``, ``SDTurbo(fal.App)`` with fal's settings,
``setup()`` that loads the pipeline and compiles the UNet inside
``synchronized_inductor_cache("sd-turbo/v1")`` while warming up the sizes it serves, and one
endpoint that makes an image in one step with guidance 0.

Weights (``MINIFAL_SD_WEIGHTS``, see ``sd_turbo_pipeline.py``): ``stabilityai/sd-turbo`` from the
Hugging Face cache on a GPU when it is there, else the exact architecture with random weights on
a GPU, else a tiny random pipeline on CPU. Random weights give noise images and real timings.
``MINIFAL_SD_VAE_UPSAMPLE=subpixel`` swaps the VAE decoder's upsamplers (nearest 2x, then a 3x3
convolution) for one 2x2 convolution of the small image each (``sd_turbo_upsample.py``: the
same pixels, 2.25x fewer FLOPs in those layers); ``interpolate``, diffusers' own, is the default.

Compilation (``MINIFAL_SD_COMPILE``): ``precompiled`` (on minifal: the first runner captures
and compiles one graph per warmup size and publishes it; later runners load those graphs and
never run Dynamo; the default), ``static`` (fal's way, ``torch.compile`` per warmup size
inside ``synchronized_inductor_cache``: kernels are shared, Dynamo re-traces on every start; the
GPU default on fal), ``regional`` (diffusers' compile_repeated_blocks with dynamic shapes: one
quick compile covers every size), ``dynamic`` (fal's page:
``torch.compile(dynamic=True)``, slowest to compile) or ``none``. ``MINIFAL_SD_PRECOMPILE``
names the modules the precompiled strategy covers (default ``unet,vae`` on a GPU, ``unet`` on
CPU; any of ``unet,vae,text``); ``MINIFAL_SD_MAX_AUTOTUNE`` names those of them compiled with
Inductor's max-autotune settings (``MAX_AUTOTUNE``: ``mode="max-autotune-no-cudagraphs"``'s,
default none; e.g. ``vae``): several times the compile time, their own artifacts. Only on
minifal's precompiled path: the other strategies, and fal, ignore it.
On minifal with a GPU, ``MINIFAL_SD_CUDA_GRAPHS`` names the modules whose calls replay from
CUDA graphs (default ``unet,vae,text``; ``none``): at batch 1 a step is launch-bound, and a
graph launches a module's kernels at once. BENCHMARKS.md has the measurements behind the
defaults. After warmup nothing recompiles: a size not covered by the warmup still works,
eagerly, and the log says so. On minifal a cold runner (one that compiles, or waits for
another's compile) is ready after an eager warmup and serves eagerly (CUDA graphs of the eager
modules on a GPU) while the artifacts are compiled in the background; each warmup size switches
to its artifact as soon as it is ready (``MINIFAL_SERVE_WHILE_COMPILING=0``: ready only once
compiled, as on fal's plain path). On minifal with a GPU the modules' weights live in an arena
at fixed addresses (``minifal.offload``; ``MINIFAL_SD_ARENA=0``: not), so that a suspended
runner moves them to pinned host memory itself and the driver's checkpoint carries only the rest.

Batching (``MINIFAL_SD_BATCH_SIZES``, e.g. ``1,2,4,8,16``; default ``1``: off, see
BENCHMARKS.md section 12): on minifal, requests that arrive together run as one pipeline call
(``@batched``, ``minifal/runner/batching.py``), one generator per request, so a request's
image is the one its seed gives alone. A batch is split by image size and into calls of the
listed sizes (padded where that is cheaper, by the call times the warmup measured), so each
module sees a few call signatures only; the warmup covers every listed size at the first
warmup size (512x512) and batch 1 at the others, where larger groups run one by one.
On fal (no ``@batched``) every request is a batch of one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import threading
import time
from typing import NamedTuple

import fal
from fal.toolkit import Image, synchronized_inductor_cache
from pydantic import BaseModel, Field, field_validator

try:
    from minifal.runner.batching import batched
except ImportError:  # on fal: each request is a batch of one

    def batched(**_settings):
        def one_at_a_time(batch_function):
            def call(self, item):
                (result,) = batch_function(self, [item])
                return result

            return call

        return one_at_a_time


logger = logging.getLogger("sd_turbo")

COMPILE_ENV = "MINIFAL_SD_COMPILE"
PRECOMPILE_ENV = "MINIFAL_SD_PRECOMPILE"
CUDA_GRAPHS_ENV = "MINIFAL_SD_CUDA_GRAPHS"
MAX_AUTOTUNE_ENV = "MINIFAL_SD_MAX_AUTOTUNE"
COMPILE_STRATEGIES = ("precompiled", "regional", "static", "dynamic", "none")
# Measured (BENCHMARKS.md): on a GPU, static graphs run a step 20-40% faster than regional
# or eager, and precompiled ones are the same graphs without Dynamo on warm runners (ready in
# 15-21 s; static 25-28 s, eager 16-17 s). On CPU a warm precompiled runner starts within
# 2 s of an eager one (setup 4.9-5.4 s; regional 7.2-7.7 s, eager 3.5-3.7 s); its cold
# compile is slower (79 s against 17-27 s), once per torch version thanks to the shared store.
DEFAULT_COMPILE = {"cuda": "precompiled", "cpu": "precompiled"}
PRECOMPILABLE = ("unet", "vae", "text")
# On a GPU the VAE decoder's artifact runs 2.7x faster than eager (BENCHMARKS.md section 11);
# the text encoder gains nothing over a CUDA graph of the eager module, so it is not compiled.
DEFAULT_PRECOMPILE = {"cuda": "unet,vae", "cpu": "unet"}
WARMUP_SIZES = ((512, 512), (768, 512))
CHANNELS_LAST_ENV = "MINIFAL_SD_CHANNELS_LAST"  # "1": UNet and VAE weights in channels_last
ARENA_ENV = "MINIFAL_SD_ARENA"  # "0": weights stay in torch's allocator (suspension moves all)
CUDNN_BENCHMARK_ENV = "MINIFAL_SD_CUDNN_BENCHMARK"  # "1": cuDNN times its algorithms per shape
VAE_UPSAMPLE_ENV = "MINIFAL_SD_VAE_UPSAMPLE"
# "subpixel": the VAE decoder's upsamplers as one 2x2 convolution of the small image
# (sd_turbo_upsample.py, 2.25x fewer FLOPs in them); the default until a GPU run shows a gain.
VAE_UPSAMPLES = ("interpolate", "subpixel")
BATCH_SIZES_ENV = "MINIFAL_SD_BATCH_SIZES"
# Off by default: measured on an H200 through the gateway (BENCHMARKS.md section 12), batches
# lost to one-at-a-time requests at 4-16 clients (38-44 against 51-52 images/s) and won at 32
# (60 against 53), with a 4 ms window and padding to the next size; the window and the plan
# below changed since, unmeasured on a GPU. "1,2,4,8,16" turns it on.
DEFAULT_BATCH_SIZES = {"cuda": "1", "cpu": "1"}
# No window: a free GPU takes whatever waits. A window left the GPU idle while batch-mates
# trickled in and split them into padded batches (3 to 4, 5 to 8, 11 to 16).
BATCH_TIMEOUT_MS = 0.0
MIN_SIDE, MAX_SIDE = 256, 1024
MAX_SEED = 2**32 - 1


def model_name(source: str) -> str:
    """A cache-key part for the weights source: its name, or a local directory's short hash."""
    if source in ("hub", "random-full", "random-tiny"):
        return source
    return "dir-" + hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:12]


def minifal_precompiled_modules():
    """minifal's precompiled-module path, or None when the app runs on fal itself."""
    try:
        from minifal.compiled.precompiled import precompiled_modules
    except ImportError:
        return None
    return precompiled_modules


def minifal_cuda_graphed():
    """minifal's CUDA-graph wrapper, or None when the app runs on fal itself."""
    try:
        from minifal.compiled.cuda_graphs import cuda_graphed
    except ImportError:
        return None
    return cuda_graphed


def minifal_keep_addresses():
    """minifal's arena for weights at fixed addresses, or None on fal (or when turned off)."""
    if os.environ.get(ARENA_ENV) == "0":
        return None
    try:
        from minifal.offload.suspension import keep_addresses
    except ImportError:
        return None
    return keep_addresses


def module_names(variable: str, default: str) -> list[str]:
    """The modules named in ``$variable`` (comma-separated; ``none`` for none)."""
    value = os.environ.get(variable, default)
    names = [n.strip() for n in value.split(",") if n.strip() and n.strip() != "none"]
    unknown = sorted(set(names) - set(PRECOMPILABLE))
    if unknown:
        raise ValueError(f"{variable}: unknown {unknown}; expected some of {PRECOMPILABLE}")
    return names


def wrap_module(pipeline, name: str, wrap) -> None:
    """Put a wrapper (precompiled, CUDA graphs) where the pipeline calls the module: the UNet,
    the VAE's decoder (``vae.decode`` calls it) or the text encoder."""
    if name == "unet":
        pipeline.unet = wrap(pipeline.unet)
    elif name == "vae":
        pipeline.vae.decoder = wrap(pipeline.vae.decoder)
    else:
        pipeline.text_encoder = wrap(pipeline.text_encoder)


def vae_upsample(value: str | None) -> str:
    """``$MINIFAL_SD_VAE_UPSAMPLE``: ``interpolate`` (diffusers'; when unset) or ``subpixel``."""
    value = value or VAE_UPSAMPLES[0]
    if value not in VAE_UPSAMPLES:
        raise ValueError(f"{VAE_UPSAMPLE_ENV}={value!r}: expected one of {VAE_UPSAMPLES}")
    return value


def use_vae_upsample(pipeline, upsample: str) -> None:
    """Give the pipeline's VAE decoder the named upsamplers (in place; new weights for subpixel)."""
    if upsample == "subpixel":
        from sd_turbo_upsample import subpixel_upsamplers

        report = subpixel_upsamplers(pipeline.vae.decoder)
        logger.info("VAE upsamplers: %d subpixel", len(report.replaced))
        for name, why in report.left.items():
            logger.warning("VAE upsampler %s left as it is: %s", name, why)


def batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` -> (1, 2, 4, 8): the batch sizes a pipeline call is padded to."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] != 1:
        raise ValueError(f"{BATCH_SIZES_ENV}={text!r}: expected sizes like 1,2,4,8 starting at 1")
    return tuple(sizes)


def requests_per_runner(sizes: str | None) -> int:
    """``max_multiplexing``: 3 one at a time (issue 11), twice the largest batch size when
    ``$MINIFAL_SD_BATCH_SIZES`` batches (the gateway sends a runner no more than this, and the
    scaler counts a runner full at this many requests in flight)."""
    largest = batch_sizes(sizes or DEFAULT_BATCH_SIZES["cuda"])[-1]
    return 3 if largest == 1 else max(3, 2 * largest)


def padded_chunks(
    count: int, sizes: tuple[int, ...], costs: dict[int, float] | None = None
) -> list[tuple[int, int]]:
    """``count`` requests as pipeline calls ``(requests, padded batch size)``, largest first,
    of the least total cost: ``costs`` (seconds of one call of each size, measured in the
    warmup) or, unmeasured, the padded sizes themselves (the least padding)."""
    cost = costs or {size: float(size) for size in sizes}
    best: list[tuple[float, list[int]]] = [(0.0, [])]  # best[n]: cost and call sizes for n
    for n in range(1, count + 1):
        best.append(
            min(
                (
                    (cost[size] + best[max(0, n - size)][0], [size, *best[max(0, n - size)][1]])
                    for size in sizes
                ),
                key=lambda option: (option[0], len(option[1])),
            )
        )
    chunks, left = [], count
    for size in sorted(best[count][1], reverse=True):
        chunks.append((min(size, left), size))
        left -= min(size, left)
    return chunks


class ImageRequest(NamedTuple):
    prompt: str
    width: int
    height: int
    seed: int


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
    # Requests overlap: one generates (under self.lock), one makes its PNG and answer, one
    # waits at the lock, so the GPU never waits for encoding or for the gateway's next request.
    # With batching, two batches of the largest size: one generates while the other answers.
    max_multiplexing = requests_per_runner(os.environ.get(BATCH_SIZES_ENV))
    keep_alive = 300
    startup_timeout = 900
    requirements = ["torch>=2.5", "diffusers>=0.31", "transformers", "accelerate"]

    def setup(self) -> None:
        import torch
        from sd_turbo_pipeline import default_device

        if os.environ.get(CUDNN_BENCHMARK_ENV) == "1":  # at the warmup's first call per shape
            torch.backends.cudnn.benchmark = True
        self.lock = threading.Lock()  # one pipeline, one generation at a time: the GPU part
        self.covered_sizes = set(WARMUP_SIZES)
        self.batch_sizes = batch_sizes(
            os.environ.get(BATCH_SIZES_ENV) or DEFAULT_BATCH_SIZES.get(default_device(), "1")
        )
        # The warmup covers every batch size at the first warmup size, batch 1 at the others.
        self.warmed_batches = {size: (1,) for size in WARMUP_SIZES[1:]}
        self.warmed_batches[WARMUP_SIZES[0]] = self.batch_sizes
        self.batch_costs: dict[tuple[int, int], dict[int, float]] = {}  # measured in warm_up
        self.batching = self.batch_sizes[-1] > 1
        if hasattr(self.generate_batch, "set_max_batch_size"):  # minifal's @batched
            self.generate_batch.set_max_batch_size(self.batch_sizes[-1])
        strategy = os.environ.get(COMPILE_ENV) or DEFAULT_COMPILE.get(default_device(), "regional")
        if strategy not in COMPILE_STRATEGIES:
            raise ValueError(f"{COMPILE_ENV}={strategy!r}: expected one of {COMPILE_STRATEGIES}")
        precompiled_modules = minifal_precompiled_modules() if strategy == "precompiled" else None
        if strategy == "precompiled" and precompiled_modules is None:
            strategy = "static"  # not on minifal: fal's own compiled cache
        self.dynamic_shapes = strategy in ("regional", "dynamic")
        self.cuda_graphed = minifal_cuda_graphed() if default_device() == "cuda" else None
        self.graphed_names = (
            module_names(CUDA_GRAPHS_ENV, "unet,vae,text") if self.cuda_graphed else []
        )
        self.channels_last = os.environ.get(CHANNELS_LAST_ENV) == "1"
        self.vae_upsample = vae_upsample(os.environ.get(VAE_UPSAMPLE_ENV))
        layout = "/channels-last" if self.channels_last else ""  # weights' strides: other graphs
        layout += "/vae-subpixel" if self.vae_upsample == "subpixel" else ""  # another VAE graph
        autotuned_names = module_names(MAX_AUTOTUNE_ENV, "none")
        if autotuned_names and precompiled_modules is None:
            logger.warning("%s: only on minifal's precompiled path; ignored", MAX_AUTOTUNE_ENV)
        if precompiled_modules is not None:
            from minifal.compiled.precompiled import MAX_AUTOTUNE

            # Weights are not in the graphs, so one key serves every weights source; the
            # max-autotune modules' artifacts are named by their options within it.
            with precompiled_modules(f"sd-turbo/v2/precompiled{layout}") as precompiled:
                self.load_pipeline(strategy)  # meanwhile, the artifacts load in the background
                precompiled_names = module_names(
                    PRECOMPILE_ENV, DEFAULT_PRECOMPILE.get(default_device(), "unet")
                )
                for name in sorted(set(autotuned_names) - set(precompiled_names)):
                    logger.warning("%s: %s is not precompiled; ignored", MAX_AUTOTUNE_ENV, name)
                for name in precompiled_names:
                    graphs = name in self.graphed_names
                    options = MAX_AUTOTUNE if name in autotuned_names else None
                    wrap = functools.partial(
                        precompiled.module, cuda_graphs=graphs, inductor_options=options
                    )
                    wrap_module(self.pipeline, name, wrap)
                self.graph_modules(exclude=precompiled_names)
                self.warm_up()
            return

        loaded = self.load_pipeline(strategy)
        # A torch.compile'd UNet is not graphed here (its own mode="reduce-overhead" would).
        self.graph_modules(exclude=[] if strategy == "none" else ["unet"])
        # The key names what was compiled: another model or strategy is another artifact.
        cache_key = f"sd-turbo/v1/{model_name(loaded.source)}/{strategy}{layout}"
        with synchronized_inductor_cache(cache_key):
            if strategy == "regional":
                self.pipeline.unet.compile_repeated_blocks(fullgraph=True, dynamic=True)
            elif strategy in ("static", "dynamic"):
                self.pipeline.unet = torch.compile(
                    self.pipeline.unet, mode="default", dynamic=strategy == "dynamic"
                )
            self.warm_up()
        if strategy != "none":
            # fal's example swaps in torch._dynamo.run for the same purpose: no recompiles now.
            torch.compiler.set_stance("eager_on_recompile")

    def load_pipeline(self, strategy: str):
        from sd_turbo_pipeline import load_sd_turbo_pipeline

        loaded = load_sd_turbo_pipeline()
        self.pipeline = loaded.pipeline
        self.device = self.pipeline.device
        use_vae_upsample(self.pipeline, self.vae_upsample)  # before any address is kept
        if self.channels_last:
            import torch

            self.pipeline.unet.to(memory_format=torch.channels_last)
            self.pipeline.vae.to(memory_format=torch.channels_last)
        keep_addresses = minifal_keep_addresses()
        if keep_addresses is not None and self.device.type == "cuda":
            # before any graph or artifact sees the weights' addresses: those stay from now on
            keep_addresses(self.pipeline.unet, self.pipeline.vae, self.pipeline.text_encoder)
        logger.info(
            "pipeline: %s; compile: %s; batch sizes: %s",
            loaded.description,
            strategy,
            ",".join(map(str, self.batch_sizes)),
        )
        return loaded

    def graph_modules(self, exclude: list[str]) -> None:
        """Replay the named modules' calls from CUDA graphs (minifal, GPU), except ``exclude``."""
        for name in self.graphed_names:
            if name not in exclude:
                wrap_module(self.pipeline, name, self.cuda_graphed)
        logger.info("CUDA graphs: %s", ", ".join(self.graphed_names) or "none")

    def warm_up(self) -> None:
        for width, height in WARMUP_SIZES:
            for batch in self.warmed_batches[(width, height)]:
                start = time.perf_counter()
                self.generate_pixels(["warmup"] * batch, [0] * batch, width, height)
                seconds = time.perf_counter() - start
                logger.info("warmup %dx%d batch %d: %.1f s", width, height, batch, seconds)
        size = WARMUP_SIZES[0]
        if len(self.warmed_batches[size]) > 1:  # one timed call per batch size, now warm
            costs = self.batch_costs[size] = {}
            for batch in self.warmed_batches[size]:
                start = time.perf_counter()
                self.generate_pixels(["warmup"] * batch, [0] * batch, *size)
                costs[batch] = time.perf_counter() - start
            timed = ", ".join(f"{b}: {1000 * s:.1f} ms" for b, s in costs.items())
            logger.info("batch calls at %dx%d: %s", *size, timed)

    def generate_pixels(self, prompts: list[str], seeds: list[int], width: int, height: int):
        """One pipeline call: a (len(prompts), height, width, 3) uint8 tensor on the CPU."""
        import torch

        generators = [torch.Generator(device=self.device).manual_seed(seed) for seed in seeds]
        with self.lock, torch.inference_mode():
            result = self.pipeline(
                prompt=prompts,
                width=width,
                height=height,
                num_inference_steps=1,
                guidance_scale=0.0,
                generator=generators,  # one per request: its latents are those of its seed
                output_type="pt",  # stays on the device, in [0, 1]
            )
            # diffusers' numpy_to_pil in float32 on the device: the same bytes, 0.8 MB an image
            pixels = result.images.float().mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)
        with torch.inference_mode():
            return pixels.cpu()  # outside the lock: the next batch's GPU work is queued

    def generate_image(self, prompt: str, width: int, height: int, seed: int):
        from PIL import Image as PILImage

        pixels = self.generate_pixels([prompt], [seed], width, height)
        return PILImage.fromarray(pixels[0].numpy())

    @batched(max_batch_size=16, batch_timeout_ms=BATCH_TIMEOUT_MS)
    def generate_batch(self, requests: list[ImageRequest]) -> list:
        """The requests' images, by size, in pipeline calls padded to the warmed batch sizes."""
        from PIL import Image as PILImage

        pictures: list = [None] * len(requests)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, request in enumerate(requests):
            by_size.setdefault((request.width, request.height), []).append(index)
        for (width, height), indices in by_size.items():
            sizes = self.warmed_batches.get((width, height), self.batch_sizes)
            costs = self.batch_costs.get((width, height))
            for count, padded in padded_chunks(len(indices), sizes, costs):
                chunk, indices = indices[:count], indices[count:]
                prompts = [requests[i].prompt for i in chunk]
                seeds = [requests[i].seed for i in chunk]
                padding = padded - count  # images nobody asked for, made and dropped
                pixels = self.generate_pixels(
                    prompts + prompts[-1:] * padding, seeds + [0] * padding, width, height
                )
                for i, image in zip(chunk, pixels[:count], strict=True):
                    pictures[i] = PILImage.fromarray(image.numpy())
        return pictures

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        size = (input.width, input.height)
        if size not in self.covered_sizes and not self.dynamic_shapes:
            logger.warning("%dx%d was not warmed up: runs eagerly (no recompile)", *size)
        seed = input.seed if input.seed is not None else random.randint(0, MAX_SEED)
        start = time.perf_counter()
        if self.batching:
            request = ImageRequest(input.prompt, input.width, input.height, seed)
            picture = self.generate_batch(request)
        else:
            picture = self.generate_image(input.prompt, input.width, input.height, seed)
        inference = time.perf_counter() - start
        logger.info("%dx%d, seed %d: %.2f s", input.width, input.height, seed, inference)
        return Output(image=Image.from_pil(picture), seed=seed, timings={"inference": inference})
