"""An app with a health check that fails once ``<data dir>/unhealthy`` names this runner's pid.

A replacement runner has another pid, so it is healthy again.
"""

import os
from pathlib import Path

import fal


def marked_unhealthy() -> bool:
    marker = Path(os.environ["MINIFAL_DATA_DIR"]) / "unhealthy"
    return marker.exists() and marker.read_text().strip() == str(os.getpid())


class HealthApp(fal.App):
    machine_type = "S"

    @fal.endpoint("/")
    def run(self) -> dict:
        return {"pid": os.getpid()}

    @fal.endpoint(
        "/health-check",
        health_check=fal.HealthCheck(
            start_period_seconds=0, timeout_seconds=1, failure_threshold=2
        ),
    )
    def health_check(self) -> dict:
        if marked_unhealthy():
            raise RuntimeError(f"runner {os.getpid()} is marked unhealthy")
        return {"ok": True}
