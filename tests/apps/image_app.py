"""Image in, image out, as in fal's docs: ``Image.from_pil`` outputs, image URL inputs.

It uses ``from __future__ import annotations`` (string annotations), as many app files do.
"""

from __future__ import annotations

import fal
from fal.toolkit import File, Image
from PIL import ImageOps
from pydantic import BaseModel, Field


class MakeInput(BaseModel):
    width: int = Field(default=64, ge=1, le=1024)
    height: int = Field(default=32, ge=1, le=1024)
    in_memory: bool = False


class InvertInput(BaseModel):
    image: Image = Field(description="The image to invert (an http(s) or data: URL).")


class FileInput(BaseModel):
    file: File


class ImageOutput(BaseModel):
    image: Image


class FileOutput(BaseModel):
    size: int
    file: File


class ImageApp(fal.App):
    def setup(self) -> None:
        from PIL import Image as PILImage

        self.pil = PILImage

    @fal.endpoint("/make")
    def make(self, input: MakeInput) -> ImageOutput:
        picture = self.pil.new("RGB", (input.width, input.height))
        for x in range(input.width):
            for y in range(input.height):
                picture.putpixel((x, y), (x % 256, y % 256, (x * y) % 256))
        repository = "in_memory" if input.in_memory else "fal"
        return ImageOutput(image=Image.from_pil(picture, repository=repository))

    @fal.endpoint("/invert")
    def invert(self, input: InvertInput) -> ImageOutput:
        return ImageOutput(image=Image.from_pil(ImageOps.invert(input.image.to_pil())))

    @fal.endpoint("/file")
    def file(self, input: FileInput) -> FileOutput:
        data = input.file.as_bytes()
        return FileOutput(size=len(data), file=File.from_bytes(data[::-1], file_name="rev.bin"))
