"""fal-style apps for audio, video and the key-value store, run end to end under ``minifal run``:
a real gateway and real runner processes on loopback ports, plain HTTP requests."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fleet_support import Fleet, start_fleet

from minifal.toolkit.kv import KVStore

pytestmark = pytest.mark.process

APPS = Path(__file__).parent / "apps_fal"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        start_fleet(APPS / "media_app.py", tmp_path_factory.mktemp("media"), workers=1) as fleet,
        fleet.client() as client,
    ):
        yield client


@pytest.fixture(scope="module")
def kv_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with start_fleet(APPS / "kv_app.py", tmp_path_factory.mktemp("kv"), workers=2) as fleet:
        yield fleet


def _fetch(client: httpx.Client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.content


def _pcm(wav: bytes) -> tuple[int, bytes]:
    with wave.open(io.BytesIO(wav)) as source:
        return source.getframerate(), source.readframes(source.getnframes())


def test_media_app_serves_fal_schemas(media: httpx.Client) -> None:
    spec = media.get("/openapi.json").json()
    assert {"/audio/tone", "/audio/reverse", "/video/frames", "/video/probe"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["Audio"]["ui"] == {"field": "audio"}
    assert schemas["Video"]["ui"] == {"field": "video"}
    probe_video = schemas["ProbeInput"]["properties"]["video"]
    assert probe_video["x-fal"]["max_duration"] == 5.0
    assert probe_video["x-fal"]["normalization"] == {"fps": 24.0}


def test_audio_out_then_in(media: httpx.Client) -> None:
    tone = media.post("/audio/tone", json={"frequency": 440, "duration": 0.25})
    assert tone.status_code == 200, tone.text
    audio = tone.json()["audio"]
    assert audio["content_type"] == "audio/wav" and audio["file_name"] == "tone.wav"
    rate, pcm = _pcm(_fetch(media, audio["url"]))
    assert rate == 16000 and len(pcm) == 2 * 4000 == audio["file_size"] - 44

    reversed_answer = media.post("/audio/reverse", json={"audio": audio["url"]})
    assert reversed_answer.status_code == 200, reversed_answer.text
    _, reversed_pcm = _pcm(_fetch(media, reversed_answer.json()["audio"]["url"]))
    samples = [pcm[i : i + 2] for i in range(0, len(pcm), 2)]
    assert reversed_pcm == b"".join(reversed(samples))
    assert reversed_answer.json()["duration"] == 0.25


def test_audio_input_that_is_not_audio_is_a_422(media: httpx.Client) -> None:
    not_wav = "data:audio/wav;base64," + base64.b64encode(b"hello").decode()
    response = media.post("/audio/reverse", json={"audio": not_wav})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "audio"]

    bad_url = media.post("/audio/reverse", json={"audio": "file:///etc/passwd"})
    assert bad_url.status_code == 422


def test_video_out_then_in(media: httpx.Client) -> None:
    made = media.post("/video/frames", json={"width": 32, "height": 24, "frames": 6, "fps": 12})
    assert made.status_code == 200, made.text
    video = made.json()["video"]
    assert video["content_type"] == "video/x-msvideo"
    clip = _fetch(media, video["url"])
    assert clip[:4] == b"RIFF" and clip[8:12] == b"AVI " and len(clip) == video["file_size"]

    probed = media.post("/video/probe", json={"video": video})
    assert probed.status_code == 200, probed.text
    assert probed.json() == {"width": 32, "height": 24, "frames": 6, "fps": 12.0, "duration": 0.5}


def test_video_over_the_fields_limits_is_a_422(media: httpx.Client) -> None:
    long_clip = media.post("/video/frames", json={"frames": 72, "fps": 12}).json()["video"]
    response = media.post("/video/probe", json={"video": long_clip["url"]})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "video"]
    assert "duration 6.0s is above the maximum of 5.0s" in detail["msg"]


def test_kv_values_are_shared_through_the_data_dir(kv_fleet: Fleet) -> None:
    with kv_fleet.client() as client:
        stored = client.post("/set", json={"key": "greeting", "value": "hello", "ttl": 120})
        assert stored.status_code == 200, stored.text
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda _: client.post("/get", json={"key": "greeting"}), range(8))
            )
        assert {a.json()["value"] for a in answers} == {"hello"}

        assert client.post("/delete", json={"key": "greeting"}).status_code == 200
        assert client.post("/get", json={"key": "greeting"}).json()["value"] is None


def test_kv_cache_example(kv_fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    with kv_fleet.client() as client:
        first = client.post("/", json={"id": "job-1", "rounds": 50}).json()
        second = client.post("/", json={"id": "job-1", "rounds": 50}).json()
    assert first["cached"] is False and second["cached"] is True
    assert first["digest"] == second["digest"]

    # The store is the data dir's SQLite file: any process of the host reads the same entry.
    monkeypatch.setenv("MINIFAL_DATA_DIR", str(kv_fleet.data_dir))
    assert KVStore("kv-app").get("result-job-1-50") == f'{{"digest": "{first["digest"]}"}}'


def test_kv_bad_input_is_a_422(kv_fleet: Fleet) -> None:
    with kv_fleet.client() as client:
        response = client.post("/set", json={"key": "k", "value": "v", "ttl": 10})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "ttl"]
