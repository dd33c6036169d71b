"""The fleet test app with ``app_auth="private"``: every call needs ``Authorization: Key <key>``."""

import os
from pathlib import Path

import fal
from pydantic import BaseModel


class Ping(BaseModel):
    runner_id: str


class PrivateFleetApp(fal.App, app_auth="private"):
    machine_type = "S"

    def teardown(self) -> None:
        runner_id = os.environ.get("MINIFAL_RUNNER_ID", "unknown")
        data_dir = Path(os.environ["MINIFAL_DATA_DIR"])
        (data_dir / f"teardown-{runner_id}").write_text(str(os.getpid()))

    @fal.endpoint("/")
    def ping(self) -> Ping:
        return Ping(runner_id=os.environ.get("MINIFAL_RUNNER_ID", "unknown"))
