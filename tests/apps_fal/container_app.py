"""A fal app with a custom container image, written as fal's "custom container" docs show it.

On fal the platform builds ``image`` and runs the app in it. minifal serves it unchanged in the
current environment (and says so in the runner log and ``minifal runners``); ``minifal dockerfile
tests/apps_fal/container_app.py`` writes the Dockerfile that builds the same container.
"""

import shutil
import subprocess

import fal
from fal.container import ContainerImage
from pydantic import BaseModel, Field

dockerfile_str = """
ARG PYTHON_VERSION=3.10
FROM python:${PYTHON_VERSION}-slim

ARG PYJOKES_VERSION
RUN pip install --no-cache-dir "pyjokes==${PYJOKES_VERSION}"
"""

custom_image = ContainerImage.from_dockerfile_str(
    dockerfile_str,
    build_args={"PYTHON_VERSION": "3.11", "PYJOKES_VERSION": "0.8.3"},
)


class Input(BaseModel):
    text: str = Field(description="What to shout back", examples=["hello"])


class Output(BaseModel):
    text: str = Field(description="The text, shouted")
    joke: str | None = Field(description="A joke, when pyjokes is installed (in the image)")
    gpu_visible: bool = Field(description="Whether nvidia-smi found a GPU during setup")


class Test(fal.App):
    image = custom_image
    machine_type = "GPU"
    requirements = ["pyjokes"]

    def setup(self):
        # fal's example runs nvidia-smi here; outside a GPU container it may not exist.
        nvidia_smi = shutil.which("nvidia-smi")
        self.gpu_visible = (
            nvidia_smi is not None
            and subprocess.run([nvidia_smi], capture_output=True, check=False).returncode == 0
        )

    @fal.endpoint("/")
    def index(self, input: Input) -> Output:
        try:
            import pyjokes

            joke = pyjokes.get_joke()
        except ImportError:
            joke = None
        return Output(text=input.text.upper() + "!", joke=joke, gpu_visible=self.gpu_visible)
