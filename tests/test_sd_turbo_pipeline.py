"""The SD-Turbo pipeline loader: shipped configs, offline tokenizer, tiny CPU pipeline, choices."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "apps"))

from sd_turbo_pipeline import (
    RANDOM_CONFIGS,
    WEIGHTS_ENV,
    LoadedPipeline,
    load_sd_turbo_pipeline,
    resolve_weights,
)

APPS_DIR = Path(__file__).resolve().parent.parent / "apps"

SD_TURBO_UNET_PARAMS = 865_910_724


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is as fast, and never spins against a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> LoadedPipeline:
    return load_sd_turbo_pipeline("random-tiny", device="cpu")


def generate(pipeline, width: int, height: int, seed: int = 1):
    return pipeline(
        "a cat wearing sunglasses",
        num_inference_steps=1,
        guidance_scale=0.0,
        width=width,
        height=height,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]


@pytest.mark.unit
def test_full_configs_give_the_sd_turbo_unet() -> None:
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(RANDOM_CONFIGS["random-full"] / "unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    assert sum(p.numel() for p in unet.parameters()) == SD_TURBO_UNET_PARAMS


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(RANDOM_CONFIGS))
def test_tokenizer_loads_offline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import CLIPTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = CLIPTokenizer.from_pretrained(RANDOM_CONFIGS[name] / "tokenizer")
    ids = tokenizer(
        "A photo of a cat, 日本", padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    assert tokenizer.model_max_length == 77
    assert ids.shape == (1, 77)
    assert ids[0, 0] == tokenizer.bos_token_id
    assert int(ids.max()) < 49408


@pytest.mark.unit
@pytest.mark.parametrize(("width", "height"), [(128, 128), (192, 128)])
def test_tiny_pipeline_generates_the_asked_size(
    tiny: LoadedPipeline, width: int, height: int
) -> None:
    image = generate(tiny.pipeline, width, height)
    assert image.size == (width, height)
    assert image.mode == "RGB"


@pytest.mark.unit
def test_same_seed_same_pixels(tiny: LoadedPipeline) -> None:
    first = np.asarray(generate(tiny.pipeline, 128, 128, seed=7))
    again = np.asarray(generate(tiny.pipeline, 128, 128, seed=7))
    other = np.asarray(generate(tiny.pipeline, 128, 128, seed=8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.unit
def test_random_weights_are_the_same_for_the_same_seed(tiny: LoadedPipeline) -> None:
    rebuilt = load_sd_turbo_pipeline("random-tiny", device="cpu").pipeline
    for name in ("unet", "vae", "text_encoder"):
        ours = getattr(tiny.pipeline, name).state_dict()
        theirs = getattr(rebuilt, name).state_dict()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours), name


@pytest.mark.unit
def test_tiny_pipeline_is_described_as_random(tiny: LoadedPipeline) -> None:
    assert tiny.source == "random-tiny"
    assert tiny.random_weights
    assert tiny.pipeline.safety_checker is None
    assert tiny.pipeline.unet.dtype == torch.float32


@pytest.mark.unit
def test_auto_on_cpu_picks_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert resolve_weights("auto", "cpu") == "random-tiny"
    assert load_sd_turbo_pipeline(device="cpu").source == "random-tiny"


@pytest.mark.unit
def test_env_sets_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, "random-tiny")
    assert load_sd_turbo_pipeline(device="cpu").source == "random-tiny"


@pytest.mark.unit
def test_unknown_weights_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown SD-Turbo weights"):
        resolve_weights("no-such-weights", "cpu")


@pytest.mark.process
def test_hub_offline_without_cache_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a fresh process: huggingface_hub reads these variables when it is imported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    script = (
        "from sd_turbo_pipeline import WeightsUnavailableError, hub_weights_cached, "
        "load_sd_turbo_pipeline\n"
        "assert not hub_weights_cached()\n"
        "try:\n"
        "    load_sd_turbo_pipeline('hub', device='cpu')\n"
        "except WeightsUnavailableError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=APPS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "cannot load stabilityai/sd-turbo with HF_HUB_OFFLINE set" in result.stdout
    assert str(tmp_path) in result.stdout
    assert WEIGHTS_ENV in result.stdout


@pytest.mark.unit
def test_the_app_makes_the_pixels_diffusers_numpy_path_makes(tiny: LoadedPipeline) -> None:
    """The app converts to 8 bits on the device (issue 11); the bytes are diffusers' own."""
    import threading

    from minifal.compat.fal_alias import install_fal_alias

    install_fal_alias()
    import sd_turbo

    app = sd_turbo.SDTurbo.__new__(sd_turbo.SDTurbo)
    app.pipeline, app.device, app.lock = tiny.pipeline, tiny.pipeline.device, threading.Lock()
    image = app.generate_image("a cat wearing sunglasses", 128, 192, seed=7)
    with torch.inference_mode():
        expected = tiny.pipeline(
            prompt="a cat wearing sunglasses",
            width=128,
            height=192,
            num_inference_steps=1,
            guidance_scale=0.0,
            generator=torch.Generator("cpu").manual_seed(7),
            output_type="np",
        ).images
    assert image.size == (128, 192)
    assert np.array_equal(np.asarray(image), np.asarray(tiny.pipeline.numpy_to_pil(expected)[0]))
