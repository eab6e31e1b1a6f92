"""Drawing detections on a picture: a coloured box per detection, its class and score above it."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# One colour per class (cycled), easy to tell apart on photos (Ultralytics' palette).
PALETTE = ["FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
           "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7"]


def colour(label: int) -> tuple[int, int, int]:
    h = PALETTE[label % len(PALETTE)]
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def draw_detections(image: np.ndarray, boxes_xyxy: torch.Tensor, labels: list[int],
                    texts: list[str] | None = None, line_width: int | None = None) -> np.ndarray:
    """A copy of `image` [H, W, 3] uint8 RGB with boxes [N, 4] (x1, y1, x2, y2 pixels) drawn.

    Each box takes its label's colour; `texts[i]` (e.g. "person 0.92") is written on a filled
    strip just above box i (inside it when the box touches the top edge).
    """
    img = Image.fromarray(image)
    h, w = image.shape[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 2)
    font = _font(max(round(lw * 5), 10))
    draw = ImageDraw.Draw(img)
    for i, (box, label) in enumerate(zip(boxes_xyxy.tolist(), labels)):
        x1, y1, x2, y2 = box
        c = colour(label)
        draw.rectangle([x1, y1, max(x2, x1), max(y2, y1)], outline=c, width=lw)
        if texts and texts[i]:
            left, top, right, bottom = draw.textbbox((0, 0), texts[i], font=font)
            tw, th = right - left + 2 * lw, bottom - top + 2 * lw
            ty = y1 - th if y1 - th >= 0 else y1
            draw.rectangle([x1, ty, x1 + tw, ty + th], fill=c)
            draw.text((x1 + lw - left, ty + lw - top), texts[i], fill=_text_colour(c), font=font)
    return np.asarray(img)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)   # scalable (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def _text_colour(c: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones."""
    return (0, 0, 0) if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 else (255, 255, 255)
