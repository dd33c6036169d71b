"""apps/sd_turbo.py end to end on CPU: the tiny random-weight pipeline, real torch.compile, the
shared compiled cache, two runners behind a real gateway, real HTTP.

The runners serve while compiling (the default): both are ready after an eager warmup, one
compiles in the background and the other loads what it publishes. The fixture waits until both
switched (their ``precompiled`` events), so the tests after it see compiled code only."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fleet_support import Fleet, start_fleet

pytest.importorskip("diffusers")
pytest.importorskip("torch")

from PIL import Image

from minifal.startup.events import read_events

SD_TURBO_APP = Path(__file__).resolve().parents[1] / "apps" / "sd_turbo.py"
# The precompiled strategy covers the text encoder here (``MINIFAL_SD_PRECOMPILE``, documented):
# one small graph, the same for both warmup sizes, whose cold compile is ~18 CPU s where the
# UNet's two graphs took ~80 s. What is proved stays: one runner compiles and publishes, the
# other loads without Dynamo, behind a real gateway. The UNet's own precompile on CPU is
# test_precompiled_processes.py::test_the_sd_turbo_unet_warm_start_skips_dynamo.
# One intra-op thread per runner: two runners share two cores (speed only, the same bytes).
FLEET_ENV = {"MINIFAL_SD_PRECOMPILE": "text", "OMP_NUM_THREADS": "1"}
READY_TIMEOUT_S = 500.0
SWITCHED_TIMEOUT_S = 500.0

pytestmark = pytest.mark.compile


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work_dir = tmp_path_factory.mktemp("sd-turbo")
    with start_fleet(
        SD_TURBO_APP, work_dir, workers=2, env=FLEET_ENV, ready_timeout=READY_TIMEOUT_S
    ) as fleet:
        wait_until_switched(fleet)
        yield fleet


def runner_events(fleet: Fleet) -> dict[str, list[dict]]:
    (run_dir,) = (fleet.data_dir / "runs").iterdir()
    return {
        path.stem: [json.loads(line) for line in path.read_text().splitlines()]
        for path in run_dir.glob("runner-*.jsonl")
    }


def wait_until_switched(fleet: Fleet) -> None:
    """Until both runners recorded their ``precompiled`` block (after their switchover)."""
    deadline = time.monotonic() + SWITCHED_TIMEOUT_S
    while time.monotonic() < deadline:
        events = runner_events(fleet)
        done = [n for n, evs in events.items() if any(e["phase"] == "precompiled" for e in evs)]
        if len(done) == 2:
            return
        time.sleep(0.5)
    raise AssertionError("the runners did not switch to compiled code in time")


def generate(fleet: Fleet, **body: object) -> httpx.Response:
    with fleet.client(timeout=120.0) as client:
        return client.post(fleet.url("/"), json=body)


def fetch_png(fleet: Fleet, url: str) -> bytes:
    with httpx.Client(timeout=30.0) as client:
        response = client.get(url)
    response.raise_for_status()
    assert response.headers["content-type"] == "image/png"
    return response.content


@pytest.mark.parametrize(("width", "height"), [(512, 512), (768, 512), (256, 384)])
def test_a_prompt_gives_a_png_of_the_asked_size(fleet: Fleet, width: int, height: int) -> None:
    response = generate(fleet, prompt="a red fox in the snow", width=width, height=height)
    assert response.status_code == 200, response.text
    output = response.json()
    assert (output["image"]["width"], output["image"]["height"]) == (width, height)
    picture = Image.open(io.BytesIO(fetch_png(fleet, output["image"]["url"])))
    assert picture.format == "PNG"
    assert picture.size == (width, height)
    assert isinstance(output["seed"], int)


def test_same_seed_gives_the_same_bytes(fleet: Fleet) -> None:
    first = generate(fleet, prompt="a lighthouse", seed=1234).json()
    second = generate(fleet, prompt="a lighthouse", seed=1234).json()
    other = generate(fleet, prompt="a lighthouse", seed=1235).json()
    assert first["seed"] == second["seed"] == 1234
    first_png = fetch_png(fleet, first["image"]["url"])
    assert first_png == fetch_png(fleet, second["image"]["url"])
    assert first_png != fetch_png(fleet, other["image"]["url"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "width": 500}, "width"),  # not a multiple of 8
        ({"prompt": "x", "height": 4096}, "height"),  # too large
        ({"prompt": "x", "width": 64}, "width"),  # too small
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"width": 512}, "prompt"),
        ({"prompt": "x", "seed": -1}, "seed"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(fleet: Fleet, body: dict, field: str) -> None:
    response = generate(fleet, **body)
    assert response.status_code == 422, response.text
    assert ["body", field] in [error["loc"] for error in response.json()["detail"]]


def test_one_runner_compiled_and_the_other_loaded_its_kernels(fleet: Fleet) -> None:
    """Counted with torch's own fx-graph cache counters, which each runner records."""
    run_dirs = list((fleet.data_dir / "runs").iterdir())
    assert len(run_dirs) == 1
    compiles = {}
    for events_file in run_dirs[0].glob("runner-*.jsonl"):
        events = read_events(events_file)
        (compile_event,) = [e for e in events if e["phase"] == "compile_cache.compile"]
        compiles[events_file.stem] = compile_event["details"]
    assert len(compiles) == 2
    hits = sorted(details["hit"] for details in compiles.values())
    assert hits == [False, True], compiles
    loader = next(details for details in compiles.values() if details["hit"])
    assert loader["fxgraph_cache_miss"] == 0 and loader["fxgraph_cache_hit"] > 0


def test_both_runners_were_ready_before_their_compiled_code_took_over(fleet: Fleet) -> None:
    """One compiled, one waited for its publish: each served eagerly from ready on, and each
    switched after, its artifact checked against eager."""
    sources = []
    for events in runner_events(fleet).values():
        (ready,) = [e for e in events if e["phase"] == "ready"]
        (switch,) = [e for e in events if e["phase"] == "precompiled.switch"]
        assert switch["details"]["switched"], switch
        assert ready["start"] < switch["end"]
        sources.append(switch["details"]["source"])
    assert sorted(sources) == ["compiled", "loaded"]


def test_the_loading_runner_ran_no_dynamo(fleet: Fleet) -> None:
    """The default strategy is precompiled: the runner that loaded never traced a graph."""
    (run_dir,) = (fleet.data_dir / "runs").iterdir()
    blocks = {}
    for events_file in run_dir.glob("runner-*.jsonl"):
        events = read_events(events_file)
        (block,) = [e["details"] for e in events if e["phase"] == "precompiled"]
        blocks[events_file.stem] = block
    by_role = sorted(blocks.values(), key=lambda block: block["compiled"])
    # One text-encoder signature serves both warmup sizes (the prompt is 77 tokens either way).
    assert [(b["loaded"], b["compiled"]) for b in by_role] == [(1, 0), (0, 1)], blocks
    assert by_role[0]["dynamo_graphs"] == 0 and by_role[0]["dynamo_s"] == 0
    assert by_role[1]["dynamo_graphs"] >= 1
