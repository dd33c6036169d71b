"""apps/sd_turbo.py as four apps whose images differ, for ``benchmarks/app_rotation.py``:
``minifal run benchmarks/apps/sd_turbo_rotation.py::SDTurboA ...::SDTurboD --gpus 0``.

Each app draws every image from its own seed (the request's seed is ignored), so the answer's
``seed`` and the image's bytes say which app answered. ``min_concurrency = 0`` and
``max_concurrency = 1``: one runner an app at most, none while another app needs the GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fal

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "apps"))

from sd_turbo import Input, Output, SDTurbo


class SDTurboRotation(SDTurbo):
    min_concurrency = 0
    max_concurrency = 1
    image_seed = 0

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return super().generate(input.model_copy(update={"seed": self.image_seed}))


class SDTurboA(SDTurboRotation):
    app_name = "sd-turbo-a"
    image_seed = 1


class SDTurboB(SDTurboRotation):
    app_name = "sd-turbo-b"
    image_seed = 2


class SDTurboC(SDTurboRotation):
    app_name = "sd-turbo-c"
    image_seed = 3


class SDTurboD(SDTurboRotation):
    app_name = "sd-turbo-d"
    image_seed = 4
