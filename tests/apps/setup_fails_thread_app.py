"""An App whose ``setup()`` starts a (non-daemon) worker thread and then raises at once: the
runner must still exit at once, saying setup() failed, not wait for its startup_timeout."""

import threading

import fal

STOP = threading.Event()


class BrokenSetupWithThreadApp(fal.App):
    startup_timeout = 300

    def setup(self) -> None:
        threading.Thread(target=STOP.wait, name="model-downloader").start()
        raise RuntimeError("weights file is missing: model-v7.safetensors")

    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
