"""An image app for the reliability benchmark: makes images, inverts ``data:`` URI inputs."""

import fal
from fal.toolkit import Image
from pydantic import BaseModel, Field


class MakeInput(BaseModel):
    width: int = Field(default=16, ge=1, le=128)
    height: int = Field(default=16, ge=1, le=128)
    red: int = Field(default=0, ge=0, le=255)


class InvertInput(BaseModel):
    image: Image = Field(description="An image as a data: URI (the benchmark has no network).")


class ImageOutput(BaseModel):
    image: Image
    width: int
    height: int


class ImageApp(fal.App):
    @fal.endpoint("/make")
    def make(self, input: MakeInput) -> ImageOutput:
        from PIL import Image as PILImage

        picture = PILImage.new("RGB", (input.width, input.height), (input.red, 0, 0))
        return ImageOutput(
            image=Image.from_pil(picture, repository="in_memory"),
            width=input.width,
            height=input.height,
        )

    @fal.endpoint("/invert")
    def invert(self, input: InvertInput) -> ImageOutput:
        from PIL import ImageOps

        picture = ImageOps.invert(input.image.to_pil().convert("RGB"))
        return ImageOutput(
            image=Image.from_pil(picture, repository="in_memory"),
            width=picture.width,
            height=picture.height,
        )
