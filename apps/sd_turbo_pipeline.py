"""Load the SD-Turbo text-to-image pipeline from the hub, a local directory, or random weights.

The weights source is one of:

- ``"hub"``: ``stabilityai/sd-turbo`` exactly as fal's example loads it (fp16 variant), from the
  Hugging Face cache or the network;
- a local directory in diffusers' layout;
- ``"random-full"``: the exact SD-Turbo architecture from ``sd_turbo_configs/full`` with random
  weights (real compute and compile times, noise images);
- ``"random-tiny"``: the same pipeline classes, much smaller (``sd_turbo_configs/tiny``), for CPU;
- ``"auto"``: hub when a GPU is present and the weights are already cached, random-full on a GPU
  without them, random-tiny on CPU. "auto" never touches the network.

``MINIFAL_SD_WEIGHTS`` sets the source when the caller passes none.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "MINIFAL_SD_WEIGHTS"
HUB_MODEL_ID = "stabilityai/sd-turbo"
HUB_VARIANT = "fp16"
CONFIGS_DIR = Path(__file__).resolve().parent / "sd_turbo_configs"
RANDOM_CONFIGS = {"random-full": CONFIGS_DIR / "full", "random-tiny": CONFIGS_DIR / "tiny"}
NAMED_WEIGHTS = ("auto", "hub", *RANDOM_CONFIGS)

# The files fp16 ``from_pretrained`` needs; all present in the cache means no download.
HUB_REQUIRED_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    f"text_encoder/model.{HUB_VARIANT}.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "unet/config.json",
    f"unet/diffusion_pytorch_model.{HUB_VARIANT}.safetensors",
    "vae/config.json",
    f"vae/diffusion_pytorch_model.{HUB_VARIANT}.safetensors",
)

# What every pipeline gets: SD-Turbo has no safety checker, and a server has no progress bars.
NO_SAFETY_CHECKER: dict[str, Any] = {
    "safety_checker": None,
    "feature_extractor": None,
    "requires_safety_checker": False,
}


class WeightsUnavailableError(RuntimeError):
    """The requested weights cannot be loaded (e.g. hub weights offline and not cached)."""


@dataclass(frozen=True)
class LoadedPipeline:
    """A ready pipeline and where its weights came from."""

    pipeline: Any  # diffusers.StableDiffusionPipeline (or whatever a local directory holds)
    source: str  # "hub", "random-full", "random-tiny" or the local directory
    description: str  # one line for logs: source, what was asked, device, dtype

    @property
    def random_weights(self) -> bool:
        return self.source in RANDOM_CONFIGS


def load_sd_turbo_pipeline(
    weights: str | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> LoadedPipeline:
    """Load the pipeline on ``device`` (CUDA if available, else CPU) in ``dtype``.

    ``weights`` defaults to ``$MINIFAL_SD_WEIGHTS``, then ``"auto"``; ``dtype`` defaults to fp16
    on CUDA and fp32 elsewhere. ``seed`` makes random weights identical across processes.
    """
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    requested = weights or os.environ.get(WEIGHTS_ENV) or "auto"
    source = resolve_weights(requested, device)
    if source == "hub":
        pipeline = load_from_hub(dtype)
    elif source in RANDOM_CONFIGS:
        pipeline = build_random_pipeline(RANDOM_CONFIGS[source], device, dtype, seed)
        warn_random_weights(source)
    else:
        pipeline = load_from_directory(Path(source), dtype)
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    dtype_name = str(dtype).removeprefix("torch.")
    description = f"{source} ({requested} requested) on {device}, {dtype_name}"
    logger.info("SD-Turbo pipeline: %s", description)
    return LoadedPipeline(pipeline, source, description)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def resolve_weights(weights: str, device: str) -> str:
    """The concrete source for ``weights``: "hub", "random-full", "random-tiny" or a directory."""
    if weights == "auto":
        if torch.device(device).type != "cuda":
            return "random-tiny"
        return "hub" if hub_weights_cached() else "random-full"
    if weights in NAMED_WEIGHTS or Path(weights).is_dir():
        return weights
    raise ValueError(
        f"unknown SD-Turbo weights {weights!r}: expected one of {', '.join(NAMED_WEIGHTS)} "
        "or an existing directory"
    )


def hub_weights_cached() -> bool:
    """Whether every file the hub load needs is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return all(
        isinstance(try_to_load_from_cache(HUB_MODEL_ID, filename), str)
        for filename in HUB_REQUIRED_FILES
    )


def load_from_hub(dtype: torch.dtype) -> Any:
    """fal's load: ``AutoPipelineForText2Image.from_pretrained(sd-turbo, variant="fp16")``."""
    from diffusers import AutoPipelineForText2Image
    from huggingface_hub import constants

    try:
        return AutoPipelineForText2Image.from_pretrained(
            HUB_MODEL_ID, torch_dtype=dtype, variant=HUB_VARIANT, **NO_SAFETY_CHECKER
        )
    except OSError as error:  # diffusers reports missing files and network failures as OSError
        offline = " with HF_HUB_OFFLINE set" if constants.HF_HUB_OFFLINE else ""
        raise WeightsUnavailableError(
            f"cannot load {HUB_MODEL_ID}{offline}: it is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) or the hub is unreachable. Download it once with "
            f"`hf download {HUB_MODEL_ID}`, or set {WEIGHTS_ENV} to random-full, random-tiny "
            f"or a local directory. ({error})"
        ) from error


def load_from_directory(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import AutoPipelineForText2Image

    return AutoPipelineForText2Image.from_pretrained(path, torch_dtype=dtype, **NO_SAFETY_CHECKER)


def build_random_pipeline(config_dir: Path, device: str, dtype: torch.dtype, seed: int) -> Any:
    """A ``StableDiffusionPipeline`` from the configs in ``config_dir`` with random weights.

    The modules are built without allocating weights (``init_empty_weights``), then every weight
    is allocated directly on ``device`` in ``dtype`` and filled by :func:`init_parameters_`: one
    cheap pass instead of PyTorch's per-module default init on the CPU and a copy to the GPU.
    """
    from accelerate import init_empty_weights
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(config_dir / "unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
    generator = torch.Generator(device).manual_seed(seed)
    for model in (unet, vae, text_encoder):
        init_parameters_(model, device, dtype, generator)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(config_dir / "tokenizer"),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(config_dir / "scheduler"),
        **NO_SAFETY_CHECKER,
    )


@torch.no_grad()
def init_parameters_(
    model: torch.nn.Module, device: str, dtype: torch.dtype, generator: torch.Generator
) -> None:
    """Give every parameter of ``model`` real storage on ``device`` and a random value, in place.

    Matrices and kernels get PyTorch's default scale, uniform in +-1/sqrt(fan_in), which keeps
    activations in fp16 range; norm scales are 1 and biases 0. Buffers were built for real and
    only move to ``device``. The parameter order is fixed, so one seed gives one model.
    """
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            value = torch.empty(parameter.shape, device=device, dtype=dtype)
            if value.dim() >= 2:
                bound = 1 / math.sqrt(value[0].numel())
                value.uniform_(-bound, bound, generator=generator)
            elif name == "weight":
                value.fill_(1)
            else:
                value.zero_()
            setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    model.to(device).eval()


def warn_random_weights(source: str) -> None:
    banner = "!" * 78
    logger.warning(
        "\n%s\n!!! SD-Turbo with RANDOM WEIGHTS (%s): images are noise, timings are real.\n"
        "!!! Set %s=hub or a local directory for real images.\n%s",
        banner,
        source,
        WEIGHTS_ENV,
        banner,
    )
