"""SD-Turbo's VAE decoder alone: layouts, cuDNN autotuning, compile, and the subpixel upsampler.

    python benchmarks/sd_turbo_vae_decoder.py --out /tmp/vae              # GPU, fp16, full config
    python benchmarks/sd_turbo_vae_decoder.py --cpu --latent 32 --out /tmp/vae   # CPU, tiny, fp32

Builds the VAE from ``apps/sd_turbo_configs/full/vae`` (``--cpu``: ``tiny/vae``, fp32) with random
weights and times ``vae.decoder`` (the module the app compiles and graphs) on random latents
scaled by 1/0.18215, shape ``B x 4 x L x L`` (``--latent``, 64: a 512x512 image), for each batch
size (``--batches``), in these variants:

- ``eager`` NCHW, ``eager-cl`` (weights and input channels_last), ``eager-cudnn``
  (``torch.backends.cudnn.benchmark=True``, NCHW), each with diffusers' upsamplers
  (``interpolate``: nearest 2x, then a 3x3 convolution) and with ``subpixel`` ones
  (``apps/sd_turbo_upsample.py``: one 2x2 convolution of the small image, 2.25x fewer FLOPs);
- ``compile`` (``torch.compile(decoder, mode="default")``, NCHW; ``--compile-channels-last``: also
  ``compile-cl``; each other mode of ``--compile-modes``, e.g. ``max-autotune-no-cudagraphs``
  (Inductor times Triton templates against cuDNN for every convolution): ``compile-<mode>``)
  at the largest batch size, both upsamplers; the first call's seconds are
  reported as the compile time.

Each time is the median of ``--iters`` calls after ``--warmup`` (CUDA events on a GPU). FLOPs are
counted once per upsampler kind with ``torch.utils.flop_counter`` at batch 1 (linear in the
batch); "TFLOPS" is the variant's own FLOPs per second, "eq TFLOPS" the interpolate decoder's
FLOPs per second (the same work). "max diff" is the largest absolute difference of the variant's
output against eager NCHW interpolate (same weights, same input), "rel" that over the largest
absolute reference value. A variant that would start after ``--budget-s`` seconds is skipped
and listed. Prints a table, writes ``<out>/sd_turbo_vae_decoder.json`` after every variant.
Needs torch and diffusers only.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "apps"))

from sd_turbo_upsample import subpixel_upsamplers  # noqa: E402

SCALING_FACTOR = 0.18215
UPSAMPLERS = ("interpolate", "subpixel")
RESULT_NAME = "sd_turbo_vae_decoder.json"


@dataclass
class Row:
    """One variant at one batch size; times in ms, FLOPs per image."""

    variant: str
    upsample: str
    batch: int
    ms_per_call: float | None = None
    ms_per_image: float | None = None
    tflops: float | None = None
    eq_tflops: float | None = None
    max_diff: float | None = None
    rel_diff: float | None = None
    compile_s: float | None = None
    status: str = "ran"


def build_vae(config_dir: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir))
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def decoder_variant(decoder: torch.nn.Module, upsample: str, channels_last: bool):
    """A copy of ``decoder`` with the given upsamplers and weights' layout (same weights)."""
    variant = copy.deepcopy(decoder)
    if upsample == "subpixel":
        report = subpixel_upsamplers(variant)
        if report.left:
            print(f"upsamplers left as they are: {report.left}")
    if channels_last:
        variant = variant.to(memory_format=torch.channels_last)
    return variant


def count_flops(decoder: torch.nn.Module, latents: torch.Tensor) -> tuple[float, float]:
    """(all FLOPs, the upsamplers' FLOPs) of one call, per image of ``latents``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        decoder(latents[:1])
    upsamplers = sum(
        sum(counts.values())
        for name, counts in counter.get_flop_counts().items()
        if re.search(r"upsamplers\.\d+$", name)
    )
    return float(counter.get_total_flops()), float(upsamplers)


def time_calls(call, inputs: torch.Tensor, warmup: int, iters: int) -> list[float]:
    """ms of each of ``iters`` calls after ``warmup`` calls (CUDA events on a GPU)."""
    cuda = inputs.device.type == "cuda"
    with torch.no_grad():
        for _ in range(warmup):
            call(inputs)
        times = []
        for _ in range(iters):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(True)
                start.record()
                call(inputs)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                began = time.perf_counter()
                call(inputs)
                times.append((time.perf_counter() - began) * 1000.0)
    return times


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (``-`` where a value is missing)."""

    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        "| variant | upsample | batch | ms/call | ms/image | TFLOPS | eq TFLOPS | max diff | rel | "
        "compile s | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.variant} | {row.upsample} | {row.batch} | {cell(row.ms_per_call, 2)} | "
            f"{cell(row.ms_per_image, 3)} | {cell(row.tflops, 2)} | {cell(row.eq_tflops, 2)} | "
            f"{cell(row.max_diff, 5)} | {cell(row.rel_diff, 6)} | {cell(row.compile_s, 1)} | "
            f"{row.status} |"
        )
    return "\n".join(lines)


EAGER_VARIANTS = ("eager", "eager-cl", "eager-cudnn")
COMPILE_CL = ("compile", "compile-cl")
"""The compiled variants of mode ``default`` (the others are named by their mode)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before them")
    parser.add_argument("--budget-s", type=float, default=200.0, help="start no variant after")
    parser.add_argument("--latent", type=int, default=64, help="latent side (64: 512x512)")
    parser.add_argument("--cpu", action="store_true", help="tiny config, fp32, on CPU")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    parser.add_argument(
        "--compile-channels-last", action="store_true", help="also compile channels_last"
    )
    parser.add_argument(
        "--compile-modes",
        type=lambda text: [mode for mode in text.split(",") if mode],
        default=["default"],
        help="torch.compile modes, comma-separated (default: default)",
    )
    parser.add_argument(
        "--upsamplers",
        type=lambda text: [name for name in text.split(",") if name],
        default=list(UPSAMPLERS),
        help=f"comma-separated, some of {','.join(UPSAMPLERS)} (default: both)",
    )
    parser.add_argument(
        "--eager-variants",
        type=lambda text: [name for name in text.split(",") if name],
        default=list(EAGER_VARIANTS),
        help="comma-separated; eager (the reference) always runs",
    )
    args = parser.parse_args(argv)
    for name in args.upsamplers:
        if name not in UPSAMPLERS:
            parser.error(f"--upsamplers: unknown {name!r}")
    for name in args.eager_variants:
        if name not in EAGER_VARIANTS:
            parser.error(f"--eager-variants: unknown {name!r}")
    return args


class Bench:
    """The variants of one decoder, run in order within the budget, the JSON kept current."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.device = torch.device("cpu" if args.cpu else "cuda")
        self.dtype = torch.float32 if args.cpu else torch.float16
        config = REPO / "apps" / "sd_turbo_configs" / ("tiny" if args.cpu else "full") / "vae"
        self.decoder = build_vae(config, self.device, self.dtype).decoder
        self.batches = sorted({int(part) for part in args.batches.split(",") if part.strip()})
        generator = torch.Generator().manual_seed(1)
        shape = (self.batches[-1], 4, args.latent, args.latent)
        latents = torch.randn(shape, generator=generator) / SCALING_FACTOR
        self.latents = latents.to(self.device, self.dtype)
        self.flops: dict[str, tuple[float, float]] = {}
        self.references: dict[int, torch.Tensor] = {}
        self.rows: list[Row] = []
        self.result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "device": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__,
            "config": str(config.relative_to(REPO)),
            "dtype": str(self.dtype),
            "latent": list(shape[1:]),
            "iters": args.iters,
            "warmup": args.warmup,
            "budget_s": args.budget_s,
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> dict:
        for upsample in UPSAMPLERS:
            decoder = decoder_variant(self.decoder, upsample, channels_last=False)
            total, upsamplers = count_flops(decoder, self.latents)
            self.flops[upsample] = (total, upsamplers)
            print(
                f"{upsample}: {total / 1e9:.1f} GFLOP an image, upsamplers {upsamplers / 1e9:.1f}"
                f" ({100 * upsamplers / total:.1f}%)"
            )
            del decoder
        for batch in self.batches:
            self.measure("eager", "interpolate", batch)  # the reference of every row
            for variant in ["eager"] + [v for v in self.args.eager_variants if v != "eager"]:
                for upsample in self.args.upsamplers:
                    if (variant, upsample) != ("eager", "interpolate"):
                        self.measure(variant, upsample, batch)
        if not self.args.no_compile:
            compiled = ["compile"] + (["compile-cl"] if self.args.compile_channels_last else [])
            compiled += [f"compile-{mode}" for mode in self.args.compile_modes if mode != "default"]
            for variant in compiled:
                for upsample in self.args.upsamplers:
                    self.measure(variant, upsample, self.batches[-1])
        return self.write()

    def measure(self, variant: str, upsample: str, batch: int) -> None:
        row = Row(variant, upsample, batch)
        self.rows.append(row)
        if self.elapsed() >= self.args.budget_s:
            row.status = f"skipped: past the budget ({self.elapsed():.0f} s)"
            print(f"{variant} {upsample} batch {batch}: {row.status}")
            self.write()
            return
        channels_last = variant.endswith("-cl")
        decoder = decoder_variant(self.decoder, upsample, channels_last)
        inputs = self.latents[:batch].contiguous()
        if channels_last:
            inputs = inputs.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = variant == "eager-cudnn"
        try:
            call = decoder
            if variant.startswith("compile"):
                mode = variant.removeprefix("compile-") if variant not in COMPILE_CL else "default"
                call = torch.compile(decoder, mode=mode)
                began = time.perf_counter()
                with torch.no_grad():
                    call(inputs)
                synchronize(self.device)
                row.compile_s = time.perf_counter() - began
            with torch.no_grad():
                output = call(inputs).float()
            if variant == "eager" and upsample == "interpolate":
                self.references[batch] = output
            reference = self.references[batch]
            row.max_diff = (output - reference).abs().max().item()
            row.rel_diff = row.max_diff / reference.abs().max().item()
            del output
            times = time_calls(call, inputs, self.args.warmup, self.args.iters)
        except Exception as error:  # one variant failing (e.g. out of memory) skips only it
            row.status = f"failed: {type(error).__name__}: {str(error)[:200]}"
            print(f"{variant} {upsample} batch {batch}: {row.status}")
            self.write()
            return
        finally:
            torch.backends.cudnn.benchmark = False
            del decoder
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        row.ms_per_call = statistics.median(times)
        row.ms_per_image = row.ms_per_call / batch
        seconds = row.ms_per_call / 1000.0
        row.tflops = self.flops[upsample][0] * batch / seconds / 1e12
        row.eq_tflops = self.flops["interpolate"][0] * batch / seconds / 1e12
        print(f"{variant} {upsample} batch {batch}: {row.ms_per_call:.2f} ms a call")
        self.write()

    def write(self) -> dict:
        self.result["flops_per_image"] = {
            upsample: {"total": total, "upsamplers": upsamplers}
            for upsample, (total, upsamplers) in self.flops.items()
        }
        self.result["rows"] = [asdict(row) for row in self.rows]
        self.result["skipped"] = [
            f"{row.variant} {row.upsample} batch {row.batch}"
            for row in self.rows
            if row.status != "ran"
        ]
        self.result["elapsed_s"] = round(self.elapsed(), 1)
        self.args.out.mkdir(parents=True, exist_ok=True)
        (self.args.out / RESULT_NAME).write_text(json.dumps(self.result, indent=2) + "\n")
        return self.result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = Bench(args)
    print(f"{bench.result['device']}, torch {torch.__version__}, {bench.result['config']}")
    result = bench.run()
    print()
    print(format_table(bench.rows))
    if result["skipped"]:
        print(f"not measured: {', '.join(result['skipped'])}")
    print(f"wrote {args.out / RESULT_NAME} after {result['elapsed_s']} s")


if __name__ == "__main__":
    main()
