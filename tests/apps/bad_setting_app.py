"""An App with a misspelt setting: it loads, as on fal (which takes any class keyword), and
minifal warns which setting it may mean (``minifal check`` shows it)."""

import fal


class TypoApp(fal.App, keep_alvie=300):
    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
