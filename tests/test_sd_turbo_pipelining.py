"""apps/sd_turbo.py pipelines its requests (issue 11): with ``max_multiplexing`` > 1 and the
lock around the GPU part only, one request's encoding overlaps the next one's generation.

On CPU with the tiny pipeline, no compile, one runner behind a real gateway. The probe app
(``apps_fleet/sd_turbo_probe_app.py``) logs who held the GPU lock and who encoded, when; the
first encoding waits until another request holds the lock. Asserted on the order of events only.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fleet_support import APPS_FLEET_DIR, start_fleet

pytest.importorskip("diffusers")
pytest.importorskip("torch")

pytestmark = pytest.mark.process

PROBE_APP = APPS_FLEET_DIR / "sd_turbo_probe_app.py"
READY_TIMEOUT_S = 300.0


def test_one_requests_encoding_overlaps_the_next_ones_generation(tmp_path: Path) -> None:
    env = {"MINIFAL_SD_COMPILE": "none", "OMP_NUM_THREADS": "1"}  # one thread: speed only
    with start_fleet(
        PROBE_APP, tmp_path, workers=1, env=env, ready_timeout=READY_TIMEOUT_S
    ) as fleet:
        with fleet.client(timeout=300.0) as client, ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda prompt: client.post("/", json={"prompt": prompt, "seed": 1}),
                    ["first", "second"],
                )
            )
        for answer in answers:
            assert answer.status_code == 200, answer.text
    events = [
        json.loads(line) for line in (fleet.data_dir / "probe.jsonl").read_text().splitlines()
    ]
    generations = sorted((e for e in events if e["what"] == "generate"), key=lambda e: e["start"])
    encodings = [e for e in events if e["what"] == "encode"]
    assert len(generations) == 2 and len(encodings) == 2
    first, second = generations
    # Generations never overlap each other: one GPU lock...
    assert first["end"] <= second["start"]
    # ...but an encoding overlaps the other request's generation: the first encoding waited
    # for another request to hold the lock, and it did.
    assert [e["overlapped"] for e in encodings if e["overlapped"] is not None] == [True]
    assert any(
        e["prompt"] != g["prompt"] and g["start"] < e["end"] and e["start"] < g["end"]
        for e in encodings
        for g in generations
    )
