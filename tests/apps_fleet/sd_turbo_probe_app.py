"""apps/sd_turbo.py as it is, with a probe: who holds the GPU lock when, and each encoding, are
written to ``<data dir>/probe.jsonl`` (what, prompt, start, end). The first encoding after setup
waits (bounded) until another request holds the GPU lock, so a runner that overlaps one
request's encoding with another's generation shows it by the order of events, and one that does
not shows ``overlapped: false``."""

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "apps"))

import sd_turbo

OVERLAP_WAIT_S = 120.0
RealImage = sd_turbo.Image


class Probe:
    def __init__(self) -> None:
        self.path = Path(os.environ["MINIFAL_DATA_DIR"]) / "probe.jsonl"
        self.request = threading.local()  # each request runs in its own thread
        self.generations = 0
        self.second_generation = threading.Event()
        self.first_encoding = True
        self.mutex = threading.Lock()

    def write(self, **record: object) -> None:
        with self.mutex, self.path.open("a") as log:
            log.write(json.dumps(record) + "\n")


class ProbedLock:
    """The app's GPU lock, recording who held it when."""

    def __init__(self, lock: threading.Lock, probe: Probe) -> None:
        self.lock = lock
        self.probe = probe

    def __enter__(self) -> None:
        self.lock.acquire()
        probe = self.probe
        probe.request.acquired = time.time()
        with probe.mutex:
            probe.generations += 1
            if probe.generations == 2:
                probe.second_generation.set()

    def __exit__(self, *exc: object) -> None:
        probe = self.probe
        released = time.time()
        self.lock.release()
        prompt = probe.request.prompt
        probe.write(what="generate", prompt=prompt, start=probe.request.acquired, end=released)


class ProbedImage:
    """``Image`` as ``sd_turbo.generate`` calls it, timed."""

    probe: Probe

    @classmethod
    def from_pil(cls, picture, *args, **kwargs):
        probe = cls.probe
        start = time.time()
        with probe.mutex:
            first, probe.first_encoding = probe.first_encoding, False
        overlapped = probe.second_generation.wait(OVERLAP_WAIT_S) if first else None
        image = RealImage.from_pil(picture, *args, **kwargs)
        end = time.time()
        prompt = probe.request.prompt
        probe.write(what="encode", prompt=prompt, start=start, end=end, overlapped=overlapped)
        return image


class SDTurboProbe(sd_turbo.SDTurbo):
    def setup(self) -> None:
        super().setup()  # warmup generations are not probed
        self.probe = ProbedImage.probe = Probe()
        self.lock = ProbedLock(self.lock, self.probe)
        sd_turbo.Image = ProbedImage

    def generate_image(self, prompt: str, width: int, height: int, seed: int):
        if hasattr(self, "probe"):
            self.probe.request.prompt = prompt
        return super().generate_image(prompt, width, height, seed)
