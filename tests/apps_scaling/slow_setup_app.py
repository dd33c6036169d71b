"""An app whose ``setup()`` outlives its ``startup_timeout``: every start is killed."""

import time

import fal


class SlowSetupApp(fal.App):
    machine_type = "S"
    startup_timeout = 2

    def setup(self) -> None:
        time.sleep(60)

    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
