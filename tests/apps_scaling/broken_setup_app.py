"""An app whose ``setup()`` raises: a failed start, with the traceback in the runner's log."""

import fal


class BrokenSetupApp(fal.App):
    machine_type = "S"

    def setup(self) -> None:
        raise RuntimeError("weights file is missing: model-v7.safetensors")

    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
