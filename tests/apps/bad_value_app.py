"""An App whose setting has a bad value: ``minifal serve`` must name it and exit non-zero."""

import fal


class NegativeApp(fal.App):
    keep_alive = -1

    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
