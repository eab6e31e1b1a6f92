"""The benchmark's picture: a given file or a generated street-like JPEG, decoded as prediction decodes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rtdetr.core import images as imageio


def decode_image(data: bytes, exif: bool = True) -> np.ndarray:
    """Encoded picture bytes (JPEG, PNG, ...) -> [H, W, 3] uint8 RGB, exactly as
    `rtdetr.core.images.read_image` decodes a file."""
    return imageio.decode_image(io.BytesIO(data), exif)


def synthetic_picture(width: int = 1280, height: int = 720, seed: int = 0, quality: int = 90) -> bytes:
    """A made-up outdoor-like picture as JPEG bytes: sky and ground gradients, soft blobs,
    shapes with shading and sensor-like grain. Decoding cost grows with detail: a flat synthetic
    picture would decode faster than a photograph, so this one has texture (about 230 KB at
    1280x720, quality 90, a photograph's order of size)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky, ground = np.array([120, 165, 215]), np.array([95, 110, 70])
    horizon = 0.45 + 0.05 * np.sin(np.linspace(0, 3 * np.pi, width))[None, :, None]
    base = np.where(y < horizon, sky + (255 - sky) * y * 0.6, ground * (1.3 - 0.5 * y))
    blobs = Image.fromarray(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    img = Image.fromarray(np.clip(base * 0.75 + np.asarray(blobs) * 0.25, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(14):  # objects: 3% to 20% of the width, in the lower two thirds
        w, h = (int(width * rng.uniform(0.03, 0.2)) + 1, int(height * rng.uniform(0.04, 0.3)) + 1)
        x0, y0 = rng.integers(0, max(1, width - w)), rng.integers(height // 3, max(height // 3 + 1, height - h))
        colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        shape = draw.ellipse if rng.random() < 0.4 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour, outline=tuple(c // 2 for c in colour), width=3)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    grain = rng.normal(0, 7, (height, width, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def describe_image(data: bytes, source: str) -> dict:
    with Image.open(io.BytesIO(data)) as img:
        return {"source": source, "format": img.format, "width": img.width, "height": img.height,
                "bytes": len(data)}


def read_image(image: bytes | str | Path | None) -> tuple[bytes, str]:
    if image is None:
        return synthetic_picture(), "generated (rtdetr.bench.benchmark.synthetic_picture, 1280x720 JPEG)"
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), "bytes given"
    path = Path(image)
    if not path.is_file():
        raise ValueError(f"{path}: no such image file")
    return path.read_bytes(), str(path)
