"""What to predict on: turning a source into a stream of pictures (`Frame`s) and failures.

A source is an image file, a folder (its images and videos, not recursive), a glob pattern
(`photos/*.jpg`, `**` recursive), a video file (frame by frame), a PIL image, a numpy array
[H, W, 3] RGB, a tensor [3, H, W] or [B, 3, H, W] RGB, or a list of any of these.

A source that is one file or picture is *strict*: if it cannot be read, `ImageReadError` is
raised. Anything else (folder, glob, list, batch tensor) is a collection: an unreadable member becomes a `Failure` (one line naming the
file) and the rest goes on.
"""
from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from rtdetr.core.images import IMAGE_SUFFIXES, ImageReadError, array_to_rgb, pil_to_rgb, read_image, tensor_to_rgb
from rtdetr.predict.video import VIDEO_SUFFIXES, count_frames, is_video, read_frames

Source = Union[str, Path, Image.Image, np.ndarray, torch.Tensor, list, tuple]


class SourceError(ValueError):
    """A source that names nothing to predict on (missing path, empty folder, glob without matches)."""


@dataclass
class Frame:
    """One picture to predict on."""

    image: np.ndarray        # [H, W, 3] uint8 RGB, upright
    path: str | None         # the file it came from; None for in-memory pictures
    index: int               # 0, 1, 2... in the order of the run
    frame: int | None = None  # frame number inside a video


@dataclass
class Failure:
    """An input that could not be used; `message` is one line and names it."""

    path: str
    message: str


@dataclass
class Item:
    """One member of an expanded source: a file (image or video), an in-memory picture, or a failure."""

    path: Path | None = None
    data: Any = None             # PIL image, numpy array or [3, H, W] tensor
    failure: Failure | None = None

    @property
    def is_video(self) -> bool:
        return self.path is not None and is_video(self.path)


def expand(source: Source) -> tuple[list[Item], bool]:
    """The members of `source`, and whether it is strict (one picture, whose errors are raised)."""
    if isinstance(source, (list, tuple)):
        items = [item for s in source for item in _expand_one(s, in_list=True)]
        if not items:
            raise SourceError("the source list is empty")
        return items, False
    items = _expand_one(source, in_list=False)
    strict = len(items) == 1 and not _is_collection_path(source)
    return items, strict


def _expand_one(source: Any, in_list: bool) -> list[Item]:
    if isinstance(source, Image.Image):
        return [Item(data=source)]
    if isinstance(source, np.ndarray):
        return [Item(data=source)]
    if isinstance(source, torch.Tensor):
        return [Item(data=t) for t in source] if source.ndim == 4 else [Item(data=source)]
    if isinstance(source, (str, Path)):
        return _expand_path(str(source), in_list)
    raise SourceError(f"cannot predict on a {type(source).__name__}; give a path, folder, glob, video, "
                      "PIL image, numpy array [H, W, 3] or tensor [3, H, W]")


def _expand_path(text: str, in_list: bool) -> list[Item]:
    if text.startswith(("http://", "https://", "rtsp://", "rtmp://")):
        raise SourceError(f"{text}: URLs and streams are not supported; download the file first")
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_media(p) and not p.name.startswith("."))
        if not files:
            raise SourceError(f"{path}: no images or videos in this folder "
                              f"(looked for {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
        return [Item(path=p) for p in files]
    if path.exists():
        return [Item(path=path)]
    if _is_glob(text):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in files if p.is_file() and _is_media(p)]
        if not files:
            raise SourceError(f"{text}: no images or videos match this pattern")
        return [Item(path=p) for p in files]
    if in_list:
        return [Item(failure=Failure(str(path), f"{path}: no such file or folder"))]
    raise SourceError(f"{path}: no such file or folder")


def _is_collection_path(source: Any) -> bool:
    if not isinstance(source, (str, Path)):
        return isinstance(source, torch.Tensor) and source.ndim == 4
    path = Path(source).expanduser()
    return path.is_dir() or (not path.exists() and _is_glob(str(source)))


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in VIDEO_SUFFIXES


def count_pictures(items: list[Item]) -> int:
    """How many pictures the items hold (video frames counted), for a progress bar."""
    return sum(count_frames(item.path) if item.is_video else 1 for item in items)


def iter_frames(items: list[Item], exif: bool = True) -> Iterator[Frame | Failure]:
    """Each picture of the items in order, or a `Failure` for each member that cannot be read."""
    index = 0
    for item in items:
        if item.failure is not None:
            yield item.failure
            continue
        name = str(item.path) if item.path is not None else f"image{index}"
        try:
            if item.is_video:
                for n, img in enumerate(read_frames(item.path)):
                    yield Frame(img, name, index, frame=n)
                    index += 1
                continue
            image = read_image(item.path, exif) if item.path is not None else to_rgb(item.data, name)
        except ImageReadError as e:
            yield Failure(name, str(e))
            continue
        yield Frame(image, name if item.path is not None else None, index)
        index += 1


def to_rgb(data: Any, name: str = "image") -> np.ndarray:
    """An in-memory picture (PIL image, numpy array, tensor) as [H, W, 3] uint8 RGB."""
    if isinstance(data, Image.Image):
        return pil_to_rgb(data, name)
    if isinstance(data, torch.Tensor):
        return tensor_to_rgb(data, name)
    return array_to_rgb(data, name)
