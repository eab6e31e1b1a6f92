"""The one check of a network input size: an int (square) or (height, width), multiples of 32."""
from __future__ import annotations

STRIDE = 32  # the backbone's largest stride: every input side must be a multiple of it


def check_imgsz(imgsz, name: str = "imgsz", stride: int = STRIDE) -> tuple[int, int]:
    """(height, width) from 640, [640], (480, 800) or '480,800' / '480x800'; a one-line
    ValueError unless both are positive multiples of `stride` (it suggests the nearest ones).
    stride=1 accepts any positive size (a data pipeline's resize, text to be checked later)."""
    if isinstance(imgsz, str):
        try:
            imgsz = [int(v) for v in imgsz.lower().replace("x", ",").split(",")]
        except ValueError:
            raise ValueError(f"{name} {imgsz!r}: give one size (640) or H,W (480,800)") from None
    hw = (imgsz, imgsz) if isinstance(imgsz, (int, float)) else tuple(imgsz)
    if len(hw) == 1:
        hw = (hw[0], hw[0])
    if len(hw) != 2 or any(isinstance(v, bool) or int(v) != v or v <= 0 or v % stride for v in hw):
        if stride == 1:
            raise ValueError(f"{name} must be a positive size or a (height, width) pair, got {imgsz}")
        near = ", ".join(f"{max(stride, round(v / stride) * stride)}" for v in hw) if len(hw) == 2 else "640"
        raise ValueError(f"{name} must be a positive multiple of {stride} (or a pair of them), "
                         f"got {imgsz} (try {near})")
    return int(hw[0]), int(hw[1])
