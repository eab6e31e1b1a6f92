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

from rtdetr.core.errors import first_line
from rtdetr.core.images import IMAGE_SUFFIXES, pil_to_rgb
from rtdetr.data.problems import DatasetError

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


def read_annotated_image(path: str | Path, expected_size: tuple[int, int] | None = None) -> tv_tensors.Image:
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
            array = pil_to_rgb(img, str(path))
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except READ_ERRORS as e:
        raise DatasetError(f"{path}: cannot read image: {first_line(e)}") from None
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous())
