"""What encoding a 512x512 output image costs on this machine's CPU, by encoder: Pillow's PNG at
its compress levels, fpng, a plain PNG writer (numpy filter + zlib-ng / ISA-L deflate), and JPEG
by Pillow and simplejpeg (libjpeg-turbo). Two images: uniform noise (the worst case: random
weights give it) and a smooth, photo-like one (gradients, shapes, a little sensor noise).
Every PNG is decoded again and compared with the original: all are lossless.

    python benchmarks/image_encoding.py --repeat 20 --out results/image_encoding_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SIZE = 512


def noise_image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def smooth_image(seed: int = 0) -> Image.Image:
    """Gradients and soft shapes, blurred, with +-3 of noise: compresses as photos do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    channels = [
        0.5 + 0.3 * np.sin(6 * x + 2 * y) + 0.2 * np.cos(9 * y),
        0.4 + 0.4 * np.sin(3 * x * y + 1) * x,
        0.6 - 0.3 * y + 0.2 * np.sin(11 * x),
    ]
    pixels = np.stack(channels, axis=-1)
    for _ in range(12):
        cx, cy, r = rng.random(3) * [1, 1, 0.2]
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.random(3)
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(2))
    grain = rng.integers(-3, 4, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + grain, 0, 255).astype(np.uint8))


def pillow(format: str, **options: int) -> Callable[[Image.Image], bytes]:
    def encode(image: Image.Image) -> bytes:
        with io.BytesIO() as buffer:
            image.save(buffer, format=format, **options)
            return buffer.getvalue()

    return encode


def plain_png(
    compress: Callable[[bytes], bytes], up_filter: bool
) -> Callable[[Image.Image], bytes]:
    """A PNG of one IDAT: every row filtered alike (None, or Up), then deflated by ``compress``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    def encode(image: Image.Image) -> bytes:
        pixels = np.asarray(image.convert("RGB")).reshape(image.height, -1)
        if up_filter:
            rows = np.empty_like(pixels)
            rows[0] = pixels[0]
            np.subtract(pixels[1:], pixels[:-1], out=rows[1:])
        else:
            rows = pixels
        kind = np.full((image.height, 1), 2 if up_filter else 0, np.uint8)
        raw = np.hstack([kind, rows]).tobytes()
        header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
        return b"".join(
            [
                b"\x89PNG\r\n\x1a\n",
                chunk(b"IHDR", header),
                chunk(b"IDAT", compress(raw)),
                chunk(b"IEND", b""),
            ]
        )

    return encode


def encoders() -> dict[str, tuple[str, Callable[[Image.Image], bytes]]]:
    """name -> (format, encode)."""
    found: dict[str, tuple[str, Callable[[Image.Image], bytes]]] = {
        f"pillow png level {level}": ("png", pillow("PNG", compress_level=level))
        for level in (0, 1, 3, 6)
    }
    if importlib.util.find_spec("fpng"):
        import fpng

        found["fpng"] = ("png", fpng.from_pil)
    found["plain png up + zlib 1"] = ("png", plain_png(lambda raw: zlib.compress(raw, 1), True))
    if importlib.util.find_spec("zlib_ng"):
        from zlib_ng import zlib_ng

        found["plain png up + zlib-ng 1"] = (
            "png",
            plain_png(lambda raw: zlib_ng.compress(raw, 1), True),
        )
    if importlib.util.find_spec("isal"):
        from isal import isal_zlib

        for level in (0, 1):
            compress = (lambda lv: lambda raw: isal_zlib.compress(raw, lv))(level)
            found[f"plain png up + isal {level}"] = ("png", plain_png(compress, True))
        found["plain png none + isal 1"] = (
            "png",
            plain_png(lambda raw: isal_zlib.compress(raw, 1), False),
        )
    from minifal.toolkit.image.encoding import encode

    found["minifal Image.from_pil png"] = ("png", lambda image: encode(image, "png"))
    found["pillow jpeg q95"] = ("jpeg", pillow("JPEG", quality=95))
    if importlib.util.find_spec("simplejpeg"):
        import simplejpeg

        found["simplejpeg q95"] = (
            "jpeg",
            lambda image: simplejpeg.encode_jpeg(np.asarray(image), quality=95, colorspace="RGB"),
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    images = {"noise": noise_image(), "smooth": smooth_image()}
    chosen = encoders()
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in images}
    for image_name, image in images.items():
        reference = np.asarray(image)
        timings: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(args.repeat):  # interleaved: a busy moment hits every encoder alike
            for name, (_, encode) in chosen.items():
                begin = time.perf_counter()
                encoded = encode(image)
                timings[name].append(time.perf_counter() - begin)
        for name, (format, encode) in chosen.items():
            encoded = encode(image)
            lossless = bool(np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), reference))
            if format == "png":
                assert lossless, f"{name} is not lossless"
            results[image_name][name] = {
                "median_ms": statistics.median(timings[name]) * 1000,
                "min_ms": min(timings[name]) * 1000,
                "kbytes": len(encoded) / 1000,
                "lossless": lossless,
            }
    print(f"{'image':<7} {'encoder':<28} {'median ms':>10} {'min ms':>8} {'KB':>8}  lossless")
    for image_name, rows in results.items():
        for name, row in rows.items():
            print(
                f"{image_name:<7} {name:<28} {row['median_ms']:>10.2f} {row['min_ms']:>8.2f}"
                f" {row['kbytes']:>8.0f}  {row['lossless']}"
            )
    if args.out:
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} CPU cores",
            "size": f"{SIZE}x{SIZE} RGB",
            "repeat": args.repeat,
            "results": results,
        }
        args.out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
