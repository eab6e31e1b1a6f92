"""Drawing detections on a picture: a coloured box per detection, its class and score above it,
over its mask (a translucent fill in the same colour) for segmentation models."""
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


# Opacity of a mask's fill.
MASK_ALPHA = 0.4


def fill_masks(image: np.ndarray, masks: np.ndarray, labels: list[int], alpha: float = MASK_ALPHA) -> np.ndarray:
    """A copy of `image` [H, W, 3] uint8 RGB with masks [N, H, W] bool blended in: each covered
    pixel moves `alpha` of the way to its label's colour; the first mask (the best detection)
    is blended last, so it lies on top. Pixels outside every mask keep their values."""
    if masks.shape[0] != len(labels) or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks {list(masks.shape)} for {len(labels)} labels on a picture of {list(image.shape[:2])}")
    out = image.astype(np.float32)
    for mask, label in reversed(list(zip(masks, labels))):
        out[mask] = out[mask] * (1 - alpha) + np.asarray(colour(label), np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_detections(image: np.ndarray, boxes_xyxy: torch.Tensor, labels: list[int],
                    texts: list[str] | None = None, line_width: int | None = None,
                    masks: np.ndarray | None = None) -> np.ndarray:
    """A copy of `image` [H, W, 3] uint8 RGB with boxes [N, 4] (x1, y1, x2, y2 pixels) drawn.

    Each box takes its label's colour; `texts[i]` (e.g. "person 0.92") is written on a filled
    strip just above box i (inside it when the box touches the top edge). masks [N, H, W] bool:
    filled in first (`fill_masks`), under the boxes.
    """
    if masks is not None:
        image = fill_masks(image, masks, labels)
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
            tx, ty = label_origin((x1, y1), (tw, th), w)
            draw.rectangle([tx, ty, tx + tw, ty + th], fill=c)
            draw.text((tx + lw - left, ty + lw - top), texts[i], fill=_text_colour(c), font=font)
    return np.asarray(img)


def label_text(name: str, score: float, labels: bool = True, scores: bool = True) -> str:
    """The text written over a detection: "name score", e.g. "green_ellipse 0.87" (either part
    left out with labels=False / scores=False; "" with both)."""
    return " ".join(t for t in ((name if labels else ""), (f"{score:.2f}" if scores else "")) if t)


def label_origin(box_top_left: tuple[float, float], strip_wh: tuple[int, int], width: int) -> tuple[float, float]:
    """Top-left corner of a label's strip: just above its box (inside it when the box touches the
    top edge), starting at the box's left edge but moved left as far as needed to end inside the
    picture (`width` pixels wide). Without that move, a box near the right edge had its strip run
    off the picture, and the score, the end of the text, was the part cut off."""
    (x1, y1), (tw, th) = box_top_left, strip_wh
    ty = y1 - th if y1 - th >= 0 else y1
    tx = max(0.0, min(x1, width - 1 - tw))  # a strip wider than the picture starts at its left edge
    return tx, ty


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)   # scalable (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def _text_colour(c: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones."""
    return (0, 0, 0) if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 else (255, 255, 255)
