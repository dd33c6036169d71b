"""A runner-like process for the precompiled-module tests.

    child.py KEY MODEL SEED WARMUP_SHAPES [AFTER_SHAPES] [--max-autotune] [--break-workers]

MODEL is ``block`` (a small attention block, quick to compile on CPU) or ``block-wide`` (the same
with another width: another structure), ``unet`` (diffusers' UNet with the tiny SD-Turbo
UNet's cross-attention blocks, one level deep), or ``conv-cuda`` (convolutions, a norm and
pointwise ops in fp16 on a GPU: what Inductor's max-autotune tunes). ``--max-autotune`` wraps
it with ``inductor_options=MAX_AUTOTUNE`` and reports the ``options`` each
``torch._inductor.standalone_compile`` of this process was handed (a worker's are its own).

Inside ``precompiled_modules(KEY)`` it calls the wrapped model once per warmup shape, then
(serving while compiling: once the switchover is over) once per "after" shape outside the
block, and prints one ``RESULT {json}`` line: how each call was served at the block's end and
at the end, the largest difference from eager, torch's own Dynamo counters and timings for the
whole run.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch

from minifal.compiled.cache.torch_timings import compile_times
from minifal.compiled.precompiled import precompiled_modules

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")

REPO = Path(__file__).resolve().parents[2]
BREAK_WORKERS = "--break-workers"
"""An argument: the compile workers are replaced by ones that exit with 3."""
MAX_AUTOTUNE_FLAG = "--max-autotune"
SWITCHOVER_TIMEOUT_S = 300.0


class AttentionBlock(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)
        self.register_buffer("gain", torch.full((width,), 0.5))

    def forward(self, x, context=None, *, scale: float = 1.0, return_dict: bool = True):
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        if context is not None:
            k = k + context
        attention = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
        y = x + self.out(attention @ v) * self.gain
        return {"sample": y} if return_dict else (y,)


class ConvBlock(torch.nn.Module):
    """Convolutions (cuDNN, outside the artifact), a norm and pointwise ops (Triton kernels,
    cubins inside it): the kinds of code an SD-Turbo UNet artifact holds. Also
    ``test_precompiled_unpacked.py``'s."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 32, 3, padding=1)
        self.norm = torch.nn.GroupNorm(8, 32)
        self.proj = torch.nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        h = torch.nn.functional.silu(self.norm(self.conv(x)))
        return (self.proj(h) + x,)


def build(model: str, seed: int) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(seed)
    if model == "conv-cuda":
        conv = ConvBlock().to("cuda", torch.float16).eval()

        def call_conv(module, shape):
            batch, side = shape
            generator = torch.Generator("cuda").manual_seed(1)
            x = torch.randn(batch, 4, side, side, generator=generator, device="cuda")
            return module(x.half())

        return conv, call_conv
    if model.startswith("block"):
        width = 24 if model == "block-wide" else 16
        block = AttentionBlock(width).eval()

        def call(module, shape):
            batch, tokens = shape
            x = torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(1))
            return module(x, None, scale=0.25, return_dict=False)

        return block, call
    from diffusers import UNet2DConditionModel

    # The tiny SD-Turbo UNet's config with one level instead of four: its cross-attention down,
    # up and mid blocks (diffusers' forward, keyword inputs, None arguments), a quarter of the
    # kernels to compile.
    config = UNet2DConditionModel.load_config(REPO / "apps" / "sd_turbo_configs" / "tiny" / "unet")
    config |= {
        "block_out_channels": [32],
        "attention_head_dim": [1],
        "down_block_types": ["CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D"],
    }
    unet = UNet2DConditionModel.from_config(config).eval()

    def call_unet(module, shape):
        side = shape[0]
        generator = torch.Generator().manual_seed(1)
        sample = torch.randn(1, 4, side, side, generator=generator)
        context = torch.randn(1, 77, 64, generator=generator)
        return module(sample, torch.tensor(999.0), encoder_hidden_states=context, return_dict=False)

    return unet, call_unet


def shapes(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(n) for n in item.split("x")) for item in text.split(",") if item]


def main() -> None:
    arguments = sys.argv[1:]
    if BREAK_WORKERS in arguments:  # a worker that fails (a test of failure)
        from minifal.compiled.precompiled import compile_workers

        arguments.remove(BREAK_WORKERS)
        compile_workers.WORKER_CODE = "import sys; sys.exit(3)"
    options, seen = None, []
    if MAX_AUTOTUNE_FLAG in arguments:
        from torch import _inductor as inductor

        from minifal.compiled.precompiled import MAX_AUTOTUNE

        arguments.remove(MAX_AUTOTUNE_FLAG)
        options, compile_graph = MAX_AUTOTUNE, inductor.standalone_compile

        def recorded(gm, example_inputs, **kwargs):
            seen.append(kwargs.get("options"))
            return compile_graph(gm, example_inputs, **kwargs)

        inductor.standalone_compile = recorded
    key, model, seed, warmup = arguments[:4]
    after = shapes(arguments[4]) if len(arguments) > 4 else []
    module, call = build(model, int(seed))
    before = compile_times()
    served = []
    with torch.inference_mode():
        with precompiled_modules(key) as precompiled:
            wrapped = precompiled.module(module, inductor_options=options)
            print("IN-BODY", flush=True)
            outputs = [(shape, call(wrapped, shape)) for shape in shapes(warmup)]
        at_ready = sorted(wrapped.resolutions.values())
        if precompiled.switchover is not None:  # the runner would serve meanwhile
            assert precompiled.switchover.join(SWITCHOVER_TIMEOUT_S), "switchover still running"
        outputs += [(shape, call(wrapped, shape)) for shape in after]
        for shape, output in outputs:
            expected = call(module, shape)
            pairs = zip(output, expected, strict=True)
            diff = max((a.float() - b.float()).abs().max().item() for a, b in pairs)
            served.append(
                {"shape": list(shape), "max_abs_diff": diff, "type": type(output).__name__}
            )
    times = compile_times().since(before)
    result = {
        "served": served,
        "at_ready": at_ready,
        "resolutions": sorted(wrapped.resolutions.values()),
        "dynamo_graphs": times.dynamo_graphs,
        "dynamo_s": times.dynamo_s,
        "frames": int(torch._dynamo.utils.counters["frames"].get("total", 0)),
        "standalone_compile_options": seen,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
