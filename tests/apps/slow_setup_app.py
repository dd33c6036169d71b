"""An App whose ``setup()`` outlives ``startup_timeout``: minifal stops it (fal only warns)."""

import time

import fal


class SlowSetupApp(fal.App):
    startup_timeout = 2

    def setup(self) -> None:
        time.sleep(120)

    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
