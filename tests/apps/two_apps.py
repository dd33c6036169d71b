"""Two Apps in one file: ``minifal serve`` must ask which one (``file.py::ClassName``)."""

import fal


class FirstApp(fal.App):
    @fal.endpoint("/")
    def run(self) -> dict:
        return {"app": "first"}


class SecondApp(fal.App):
    @fal.endpoint("/")
    def run(self) -> dict:
        return {"app": "second"}
