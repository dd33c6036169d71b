"""An App whose ``setup()`` raises: the runner must exit non-zero and show the traceback."""

import fal


class BrokenSetupApp(fal.App):
    def setup(self) -> None:
        raise RuntimeError("weights file is missing: model-v7.safetensors")

    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
