"""Pictures into one form: a [H, W, 3] uint8 RGB numpy array (prediction and data sets alike).

Every way a picture can arrive ends here: an image file (EXIF rotation applied), a PIL image,
a numpy array (RGB, channels last) or a torch tensor (RGB, channels first). Odd formats are
converted: grayscale and palette images to RGB, RGBA by dropping the alpha channel (as the
official code's `.convert('RGB')` and `rtdetr.data` do), 16-bit images scaled down to 8 bits
(not clipped), CMYK to RGB. What cannot be
used raises `ImageReadError`, whose message is one line naming the file and the problem.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from rtdetr.core.errors import ImageReadError, first_line

# File name endings read as still images (anything else in a folder is left alone).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp",
                            ".gif", ".ppm", ".pgm", ".pbm", ".mpo"})


def read_image(path: str | Path, exif: bool = True) -> np.ndarray:
    """The picture in an image file as [H, W, 3] uint8 RGB, turned upright by its EXIF orientation.

    Decodes the whole file at once, so a truncated file fails here and not half-way through.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return decode_image(path, exif, str(path))
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image, or in a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: too large to decode safely ({first_line(e)})") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except Exception as e:  # Pillow signals broken data with OSError, SyntaxError, EOFError, ValueError...
        raise ImageReadError(f"{path}: truncated or corrupt image ({first_line(e)})") from None


def decode_image(source: str | Path | BinaryIO, exif: bool = True, name: str = "image") -> np.ndarray:
    """A file path or an open binary stream (e.g. `io.BytesIO(jpeg_bytes)`) -> [H, W, 3] uint8 RGB:
    the whole picture decoded, EXIF orientation applied, any mode converted. Pillow's own errors
    pass through (`read_image` turns them into one-line `ImageReadError`s)."""
    with Image.open(source) as img:
        img.load()
        if exif:
            img = ImageOps.exif_transpose(img)
        return pil_to_rgb(img, name)


def pil_to_rgb(img: Image.Image, name: str = "image") -> np.ndarray:
    """A PIL image of any mode as [H, W, 3] uint8 RGB."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _gray_to_rgb(_high_depth_to_uint8(np.asarray(img), mode))
    if mode in ("PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as e:
        raise ImageReadError(f"{name}: cannot convert colour mode {mode} to RGB ({first_line(e)})") from None


def array_to_rgb(array: np.ndarray, name: str = "image") -> np.ndarray:
    """A numpy picture as [H, W, 3] uint8 RGB.

    Accepts [H, W] (gray), [H, W, 1], [H, W, 3] (RGB; OpenCV's BGR must be flipped first:
    `img[..., ::-1]`) or [H, W, 4] (RGBA, alpha dropped), as uint8, uint16 (scaled to 8 bits)
    or float in [0, 1].
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4):
        raise ImageReadError(f"{name}: expected a channels-last array [H, W, 3] (RGB), got shape {list(a.shape)}"
                             + ("; for channels-first data pass a torch tensor" if a.shape[0] in (1, 3, 4) else ""))
    if a.ndim not in (2, 3) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageReadError(f"{name}: expected an image array [H, W, 3] (RGB), got shape {list(a.shape)}")
    a = _to_uint8(a, name)
    if a.ndim == 2 or a.shape[-1] == 1:
        return _gray_to_rgb(a.reshape(a.shape[0], a.shape[1]))
    return np.ascontiguousarray(a[..., :3])


def tensor_to_rgb(tensor: torch.Tensor, name: str = "image") -> np.ndarray:
    """A torch picture [3, H, W] or [1, H, W] (RGB, channels first; float in [0, 1] or uint8) as [H, W, 3] uint8."""
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ImageReadError(f"{name}: expected a tensor [3, H, W] (RGB, channels first), got shape {list(tensor.shape)}")
    return array_to_rgb(tensor.detach().to("cpu").permute(1, 2, 0).numpy(), name)


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return _high_depth_to_uint8(a, "I;16")
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise ImageReadError(f"{name}: float images must hold values in [0, 1], "
                                 f"got [{np.nanmin(a):.3g}, {np.nanmax(a):.3g}]")
        return np.round(np.nan_to_num(a) * 255).astype(np.uint8)
    raise ImageReadError(f"{name}: unsupported pixel type {a.dtype} (use uint8, uint16 or float in [0, 1])")


def _high_depth_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (or 32-bit integer, or float) gray values down to 8 bits by scaling, never by clipping."""
    a = a.astype(np.float64)
    if mode == "F" and a.size and a.max() <= 1.0:
        a = a * 255.0
    elif mode.startswith("I;16") or (a.size and a.max() > 255):
        a = a / 257.0   # 65535 -> 255
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


def preprocess(image: np.ndarray, imgsz: tuple[int, int]) -> torch.Tensor:
    """The official pre-processing: [H, W, 3] uint8 RGB -> [3, h, w] float in [0, 1], a plain
    bilinear resize (PIL's, as the official code) to imgsz = (h, w), aspect ratio not kept."""
    h, w = imgsz
    resized = Image.fromarray(image).resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float().div_(255)
