"""Shared pieces for the prediction tests: a stand-in detector that finds pure colours, and
pictures and videos made on the spot (no downloads, no official weights needed)."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
COLOURS = {"red": RED, "green": GREEN, "blue": BLUE, "white": WHITE}


class ColourDetector(nn.Module):
    """A detector whose right answers are known: query q boxes every pixel of colour q.

    For each colour in `labels` (red, green, blue, white: channels above / below 0.5), the
    bounding box of the network-input pixels of that colour becomes one query scoring `score`
    for class `labels[colour]`; all other scores are ~0. Records each call's input in `calls`.
    """

    def __init__(self, labels: dict[str, int] | None = None, num_classes: int = 80,
                 class_names: list[str] | None = None, score: float = 0.9, num_layers: int = 3):
        super().__init__()
        self.labels = labels or {"red": 0, "green": 1, "blue": 2, "white": 3}
        self.num_classes, self.class_names, self.score = num_classes, class_names, score
        self.anchor = nn.Parameter(torch.zeros(1))          # gives the model a device
        self.decoder = SimpleNamespace(num_layers=num_layers, eval_layers=num_layers)
        self.cfg = SimpleNamespace(name="colour-detector")
        self.calls: list[dict] = []

    def forward(self, x: torch.Tensor, num_decoder_layers: int | None = None) -> dict[str, torch.Tensor]:
        self.calls.append({"shape": tuple(x.shape), "layers": num_decoder_layers, "dtype": x.dtype,
                           "min": float(x.min()), "max": float(x.max())})
        b, _, h, w = x.shape
        logits = torch.full((b, len(self.labels), self.num_classes), -20.0)
        boxes = torch.full((b, len(self.labels), 4), 0.5)
        high = x > 0.5
        for q, (colour, label) in enumerate(self.labels.items()):
            want = torch.tensor([c > 127 for c in COLOURS[colour]]).view(1, 3, 1, 1)
            mask = (high == want).all(1)
            for i in range(b):
                ys, xs = torch.nonzero(mask[i], as_tuple=True)
                if len(xs) == 0:
                    continue
                x1, x2 = xs.min() / w, (xs.max() + 1) / w
                y1, y2 = ys.min() / h, (ys.max() + 1) / h
                boxes[i, q] = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
                logits[i, q, label] = math.log(self.score / (1 - self.score))
        return {"pred_logits": logits, "pred_boxes": boxes}


@pytest.fixture
def detector() -> ColourDetector:
    return ColourDetector()


def picture(w: int, h: int, box: tuple[int, int, int, int], colour=RED, background=BLACK) -> np.ndarray:
    """[h, w, 3] uint8 RGB filled with `background`, with a `colour` rectangle at box = (x1, y1, x2, y2)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = background
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = colour
    return img


def save_picture(path: Path, img: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **kw)
    return path


def write_video(path: Path, frames: list[np.ndarray], rotation: int = 0, fps: int = 10) -> Path:
    """An MPEG-4 video of RGB frames, made with PyAV; `rotation` goes into the display matrix."""
    av = pytest.importorskip("av")
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = 4_000_000
        if rotation:
            if not hasattr(stream, "set_display_rotation"):
                pytest.skip("this PyAV cannot write a display rotation")
            stream.set_display_rotation(rotation)
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def moving_square_frames(n: int = 4, w: int = 128, h: int = 96) -> tuple[list[np.ndarray], list[tuple]]:
    """n frames with a red 32x24 square moving 16 px right each frame, and the square's boxes."""
    boxes = [(16 + 16 * i, 32, 48 + 16 * i, 56) for i in range(n)]
    return [picture(w, h, b) for b in boxes], boxes


def assert_box(actual, expected, tol: float) -> None:
    """Boxes [4] equal within `tol` pixels."""
    a = torch.as_tensor(actual, dtype=torch.float32)
    e = torch.as_tensor(expected, dtype=torch.float32)
    assert torch.allclose(a, e, atol=tol), f"box {a.tolist()} != {e.tolist()} (tolerance {tol} px)"
