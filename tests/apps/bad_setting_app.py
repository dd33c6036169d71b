"""An App with a misspelt setting: ``minifal serve`` must name it and exit non-zero."""

import fal


class TypoApp(fal.App, keep_alvie=300):
    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
