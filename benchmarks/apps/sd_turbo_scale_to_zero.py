"""apps/sd_turbo.py, scaling to zero one second after its last request (for
benchmarks/suspend_resume.py): ``minifal run benchmarks/apps/sd_turbo_scale_to_zero.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "apps"))

from sd_turbo import SDTurbo


class SDTurboScaleToZero(SDTurbo):
    keep_alive = 1
    min_concurrency = 0
    max_concurrency = 1
