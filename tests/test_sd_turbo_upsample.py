"""apps/sd_turbo_upsample.py on CPU, fp32: the subpixel upsampler computes what diffusers'
``Upsample2D`` does, alone, in the tiny VAE decoder and in the tiny pipeline's images, and the
app's ``MINIFAL_SD_VAE_UPSAMPLE`` knob."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("torch")

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.models.upsampling import Upsample2D
from sd_turbo_support import APPS_DIR, app_module

sd_turbo = app_module("sd_turbo")
sd_turbo_upsample = app_module("sd_turbo_upsample")
load_sd_turbo_pipeline = app_module("sd_turbo_pipeline").load_sd_turbo_pipeline

pytestmark = pytest.mark.unit


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize(
    ("channels", "out_channels", "height", "width"),
    [(1, 1, 1, 1), (3, 3, 5, 7), (8, 8, 6, 6), (16, 16, 9, 4), (8, 12, 4, 5)],
)
def test_the_subpixel_upsampler_computes_what_upsample2d_does(
    channels: int, out_channels: int, height: int, width: int
) -> None:
    torch.manual_seed(channels * 100 + height * 10 + width)
    original = Upsample2D(channels, use_conv=True, out_channels=out_channels).eval()
    subpixel = sd_turbo_upsample.SubpixelUpsample2D(original.conv)
    inputs = torch.randn(2, channels, height, width)
    with torch.no_grad():
        expected = original(inputs)
        assert relative_difference(subpixel(inputs), expected) <= 1e-5
        # diffusers' call with the output size, and a channels_last input (the layout is kept)
        assert relative_difference(subpixel(inputs, (2 * height, 2 * width)), expected) <= 1e-5
        channels_last = subpixel(inputs.to(memory_format=torch.channels_last))
        assert relative_difference(channels_last, expected) <= 1e-5
    if channels > 1 and height * width > 1:
        assert channels_last.is_contiguous(memory_format=torch.channels_last)


def test_an_output_size_other_than_twice_the_input_is_refused() -> None:
    subpixel = sd_turbo_upsample.SubpixelUpsample2D(Upsample2D(4, use_conv=True).conv)
    with pytest.raises(NotImplementedError, match="only 2x"):
        subpixel(torch.randn(1, 4, 5, 5), (11, 11))


def test_the_kernel_taps_are_the_sums_of_the_3x3_rows_and_columns() -> None:
    weight = torch.arange(9.0).reshape(1, 1, 3, 3)  # rows (0 1 2), (3 4 5), (6 7 8)
    phased, bias = sd_turbo_upsample.subpixel_weights(weight, torch.tensor([0.5]))
    # phase (0, 0): rows (w0, w1+w2), columns (w0, w1+w2)
    assert phased[0, 0].tolist() == [[0.0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]]
    # phase (1, 1): rows (w0+w1, w2), columns (w0+w1, w2)
    assert phased[3, 0].tolist() == [[0 + 1 + 3 + 4, 2 + 5], [6 + 7, 8.0]]
    assert bias.tolist() == [0.5] * 4


def test_other_upsamplers_are_left_as_they_are_and_named() -> None:
    model = torch.nn.Module()
    model.plain = Upsample2D(4, use_conv=True)
    model.transposed = Upsample2D(4, use_conv_transpose=True)
    model.no_conv = Upsample2D(4, use_conv=False)
    model.wide = Upsample2D(4, use_conv=True, kernel_size=5, padding=2)
    report = sd_turbo_upsample.subpixel_upsamplers(model)
    assert report.replaced == ["plain"]
    assert set(report.left) == {"transposed", "no_conv", "wide"}
    assert "transposed" in report.left["transposed"]
    assert isinstance(model.plain, sd_turbo_upsample.SubpixelUpsample2D)
    assert isinstance(model.wide, Upsample2D)


def test_the_tiny_vae_decodes_the_same_with_subpixel_upsamplers() -> None:
    config = AutoencoderKL.load_config(APPS_DIR / "sd_turbo_configs" / "tiny" / "vae")
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(config).eval()
    latents = torch.randn(2, 4, 16, 24) / 0.18215
    with torch.no_grad():
        expected = vae.decode(latents).sample
        report = sd_turbo_upsample.subpixel_upsamplers(vae.decoder)
        actual = vae.decode(latents).sample
    assert len(report.replaced) == 3 and not report.left
    assert (actual - expected).abs().max().item() <= 1e-4


def test_the_knob_takes_interpolate_or_subpixel_and_names_itself_otherwise() -> None:
    assert sd_turbo.vae_upsample(None) == "interpolate"
    assert sd_turbo.vae_upsample("subpixel") == "subpixel"
    with pytest.raises(ValueError, match="MINIFAL_SD_VAE_UPSAMPLE"):
        sd_turbo.vae_upsample("bilinear")


def test_the_tiny_pipelines_images_differ_by_at_most_one_level_with_subpixel() -> None:
    pipeline = load_sd_turbo_pipeline("random-tiny", device="cpu").pipeline
    app = sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo)
    app.pipeline, app.device, app.lock = pipeline, pipeline.device, threading.Lock()
    app.batch_sizes, app.warmed_batches, app.batch_costs = (1,), {}, {}
    requests = [("a red fox in the snow", 256, 256, 11), ("a lighthouse at dusk", 256, 320, 12)]
    before = [np.asarray(app.generate_image(*request), np.int16) for request in requests]
    sd_turbo.use_vae_upsample(pipeline, "subpixel")
    assert any(
        isinstance(module, sd_turbo_upsample.SubpixelUpsample2D)
        for module in pipeline.vae.decoder.modules()
    )
    after = [np.asarray(app.generate_image(*request), np.int16) for request in requests]
    differences = [int(np.abs(a - b).max()) for a, b in zip(after, before, strict=True)]
    print(f"max pixel difference, subpixel vs interpolate (0-255): {max(differences)}")
    assert max(differences) <= 1


def test_the_benchmark_counts_the_upsamplers_flops_and_prints_every_row() -> None:
    """benchmarks/sd_turbo_vae_decoder.py's FLOP count and table (its CPU run: the report)."""
    path = APPS_DIR.parent / "benchmarks" / "sd_turbo_vae_decoder.py"
    spec = importlib.util.spec_from_file_location("sd_turbo_vae_decoder", path)
    bench = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # for its dataclass
    spec.loader.exec_module(bench)
    config = APPS_DIR / "sd_turbo_configs" / "tiny" / "vae"
    decoder = bench.build_vae(config, torch.device("cpu"), torch.float32).decoder
    latents = torch.randn(2, 4, 8, 8)
    _, interpolate = bench.count_flops(decoder, latents)  # per image: the first only
    _, subpixel = bench.count_flops(bench.decoder_variant(decoder, "subpixel", False), latents)
    # three upsamplers of 16 channels at 8x8, 16x16, 32x32: 2*C*C*9 MACs at each of 4*H*W
    # outputs against 2*C*4C*4 at each of (H+1)*(W+1)
    assert interpolate == 72 * 16 * 16 * (8 * 8 + 16 * 16 + 32 * 32)
    assert subpixel == 32 * 16 * 16 * (9 * 9 + 17 * 17 + 33 * 33)
    rows = [bench.Row("eager", "interpolate", 16, 95.0, 5.9375, 42.0, 42.0, 0.0, 0.0)]
    rows.append(bench.Row("compile", "subpixel", 16, status="skipped: past the budget (201 s)"))
    table = bench.format_table(rows).splitlines()
    assert len(table) == 4
    assert "| eager | interpolate | 16 | 95.00 | 5.938 | 42.00 |" in table[2]
    assert table[3].endswith("| - | skipped: past the budget (201 s) |")
