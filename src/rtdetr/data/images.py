"""Reading image files as RGB uint8 tensors, and their sizes without decoding them.

Every image goes through Pillow: EXIF orientation is applied (as cameras, annotation tools and
Ultralytics do), grayscale, palette, CMYK and RGBA images become RGB (alpha dropped), and
16-bit images are scaled down to 8 bits instead of being clipped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors

from .problems import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".mpo", ".pbm", ".pgm", ".ppm")
ORIENTATION = 0x0112  # EXIF tag
SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
# What Pillow raises for files that are not images, truncated, or absurdly large.
READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception:  # broken EXIF block: treat as upright
        return 1


def image_sizes(path: str | Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """((width, height) of the stored pixels, (width, height) as displayed after EXIF orientation).

    Read from the header only. Raises one of READ_ERRORS when the file is not a readable image.
    """
    with Image.open(path) as img:
        w, h = img.size
        return (w, h), ((h, w) if _orientation(img) in SWAPS_SIDES else (w, h))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as displayed (after EXIF orientation), from its header."""
    return image_sizes(path)[1]


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow image -> uint8 array [H, W, 3]; 16-bit and float images are rescaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit range 0..65535 -> 0..255
        elif img.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0  # float image in 0..1
        gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's warning about palette transparency
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy


def read_image(path: str | Path, expected_size: tuple[int, int] | None = None) -> tv_tensors.Image:
    """Decode an image file to tv_tensors.Image, uint8 [3, H, W], RGB.

    expected_size: the (width, height) the annotations were made on. The EXIF-oriented image
    is used when it has that size, else the raw pixels when those do (annotations made on the
    unrotated image); any other size raises a one-line DatasetError naming the file.
    """
    path = Path(path)
    expected_size = None if expected_size is None else (int(expected_size[0]), int(expected_size[1]))
    try:
        with Image.open(path) as raw:
            raw.load()
            img = raw
            if _orientation(raw) != 1:
                oriented = ImageOps.exif_transpose(raw)
                if expected_size is None or oriented.size == expected_size or raw.size != expected_size:
                    img = oriented
            if expected_size is not None and img.size != expected_size:
                w, h = img.size
                raise DatasetError(f"{path}: image is {w}x{h} pixels but its annotations say "
                                   f"{expected_size[0]}x{expected_size[1]}")
            array = to_rgb_array(img)
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except READ_ERRORS as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(f"{path}: cannot read image: {reason}") from None
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous())
