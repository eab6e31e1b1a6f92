"""Video files, read and written frame by frame with PyAV (FFmpeg's libraries, RGB frames).

PyAV is an optional extra (`pip install 'rtdetr[video]'`): without it, a video gives a
one-line `ImageReadError` naming the file, and images keep working.
"""
from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtdetr.core.errors import ImageReadError, first_line

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg",
                            ".wmv", ".flv", ".ts", ".3gp"})
INSTALL_HINT = "pip install 'rtdetr[video]' (PyAV)"


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _av(path: Path):
    try:
        import av
    except ImportError:
        raise ImageReadError(f"{path}: reading videos needs PyAV: {INSTALL_HINT}") from None
    return av


def count_frames(path: Path) -> int:
    """The frame count the container states (or estimates from its duration); 0 if it cannot be read."""
    try:
        av = _av(path)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return stream.frames
            if stream.duration and stream.time_base and stream.average_rate:
                return round(float(stream.duration * stream.time_base * stream.average_rate))
            return 0
    except Exception:  # the problem shows up, with its message, when the frames are read
        return 0


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """Yields each frame of the first video stream as [H, W, 3] uint8 RGB, turned upright.

    Phone videos store a rotation in their display matrix (as photos do in EXIF); it is applied.
    """
    av = _av(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except Exception as e:  # av.FFmpegError and friends
        raise ImageReadError(f"{path}: not a readable video ({_reason(e)})") from None
    with container:
        if not container.streams.video:
            raise ImageReadError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                yield _upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0))
                n += 1
        except ImageReadError:
            raise
        except Exception as e:
            raise ImageReadError(f"{path}: decoding failed after {n} frames ({_reason(e)})") from None
        if n == 0:
            raise ImageReadError(f"{path}: no frames could be decoded")


def frame_rate(path: Path) -> Fraction:
    """Frames per second of the first video stream (30 when the file does not say)."""
    av = _av(path)
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
    return Fraction(rate) if rate else Fraction(30)


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, as PyAV reports it)."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


class VideoWriter:
    """Writes RGB frames [H, W, 3] uint8 to an H.264 (or MPEG-4 part 2) file; opened by the first frame."""

    def __init__(self, path: Path, fps: Fraction):
        self.path, self.fps = path, fps
        self._container = self._stream = None

    def write(self, img: np.ndarray) -> None:
        av = _av(self.path)
        img = _even(img)
        if self._container is None:
            self._container = av.open(str(self.path), "w")
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=self.fps)
            self._stream.height, self._stream.width = img.shape[:2]
            self._stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        for packet in self._stream.encode(frame.reformat(self._stream.width, self._stream.height)):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None


def _even(img: np.ndarray) -> np.ndarray:
    """Pad to an even height and width by repeating the last row/column (4:2:0 video needs it)."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return img


def _reason(e: BaseException) -> str:
    strerror = getattr(e, "strerror", None)  # FFmpeg errors: strerror, without the errno
    return first_line(ValueError(strerror) if strerror else e)
