"""The smallest useful fal app: text and an image out. Runs unchanged on fal and on minifal."""

import fal
from fal.toolkit import Image
from pydantic import BaseModel, Field


class Input(BaseModel):
    name: str = Field(description="Who to greet", examples=["world"])
    size: int = Field(default=64, ge=8, le=1024, description="Side of the square image")


class Output(BaseModel):
    greeting: str
    image: Image


class Hello(fal.App, keep_alive=60):
    machine_type = "S"

    def setup(self) -> None:
        from PIL import Image as PILImage  # heavy imports go in setup(), as on fal

        self.new_image = PILImage.new

    @fal.endpoint("/")
    def greet(self, input: Input) -> Output:
        picture = self.new_image("RGB", (input.size, input.size), (255, 120, 0))
        return Output(greeting=f"Hello, {input.name}!", image=Image.from_pil(picture))
