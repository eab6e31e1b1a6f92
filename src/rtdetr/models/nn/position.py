"""Size-dependent constants: AIFI sin-cos position embeddings and decoder anchors.

Both depend only on the feature-map sizes, so the modules compute them once per input
size and cache them (`SizeCache`): any height and width that are multiples of 32 work.
For one known size, `fix_size(hw)` on the encoder and the decoder (or `RTDETR.fix_size`)
keeps them as buffers instead, and other sizes are refused (`size_mismatch`).
"""
from __future__ import annotations

import torch


POS_LAYOUTS = ("official", "consistent")


def sincos_position_embedding(w: int, h: int, dim: int = 256, temperature: float = 10000.0,
                              layout: str = "official") -> torch.Tensor:
    """2-D sin-cos embedding of an h x w map, [1, h*w, dim], in the order the map's cells are
    flattened (row-major: token t is cell (t // w, t % w)).

    The first half of the channels encodes one coordinate a, the second half another, b:
    `[sin(a*omega), cos(a*omega), sin(b*omega), cos(b*omega)]`, omega = temperature ** -(k / (dim/4)).

    layout "official": as the official models compute it, the grid laid out w-major
    (`meshgrid(arange(w), arange(h), indexing='ij')`) but read in the features' row-major order,
    so token t gets a = t // h, b = t % h. On a square map that is a = row, b = column (the two
    roles are swapped, consistently); on a rectangular one a cell gets another cell's embedding.
    layout "consistent": a = row, b = column on every map: the embedding a square-trained model
    saw, extended to h x w (identical to "official" when h == w).
    """
    if dim % 4:
        raise ValueError(f"position embedding dim must be divisible by 4, got {dim}")
    if layout not in POS_LAYOUTS:
        raise ValueError(f"unknown position-embedding layout {layout!r}; expected one of {POS_LAYOUTS}")
    if layout == "official":
        grid_a, grid_b = torch.meshgrid(
            torch.arange(int(w), dtype=torch.float32), torch.arange(int(h), dtype=torch.float32), indexing="ij")
    else:
        grid_a, grid_b = torch.meshgrid(
            torch.arange(int(h), dtype=torch.float32), torch.arange(int(w), dtype=torch.float32), indexing="ij")
    pos_dim = dim // 4
    omega = 1.0 / (temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    out_a = grid_a.flatten()[:, None] @ omega[None]
    out_b = grid_b.flatten()[:, None] @ omega[None]
    return torch.cat([out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], dim=1)[None]


def generate_anchors(spatial_shapes: list[tuple[int, int]], grid_size: float = 0.05,
                     eps: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor boxes of every feature-map cell, as logits.

    Returns `anchors` [1, sum(h*w), 4] (inverse-sigmoid of cx, cy, w, h; `inf` where invalid)
    and `valid_mask` [1, sum(h*w), 1] (True where all four coordinates lie in (eps, 1-eps)).
    Level `l` anchors are `grid_size * 2**l` wide and high, centred on the cells.
    """
    levels = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        grid_y, grid_x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid_xy = (torch.stack([grid_x, grid_y], dim=-1)[None] + 0.5) / torch.tensor([w, h], dtype=torch.float32)
        wh = torch.ones_like(grid_xy) * grid_size * (2.0 ** lvl)
        levels.append(torch.cat([grid_xy, wh], dim=-1).reshape(1, h * w, 4))
    anchors = torch.cat(levels, dim=1)
    valid_mask = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    anchors = torch.log(anchors / (1 - anchors))
    anchors = torch.where(valid_mask, anchors, torch.inf)
    return anchors, valid_mask


class SizeCache:
    """A small dict of tensors keyed by input size, device and dtype (not part of any state dict)."""

    def __init__(self, build, max_entries: int = 8):
        self._build = build
        self._store: dict = {}
        self._max = max_entries

    def get(self, key: tuple, device: torch.device, dtype: torch.dtype | None = None):
        full_key = (key, str(device), dtype)
        if full_key not in self._store:
            if len(self._store) >= self._max:
                self._store.pop(next(iter(self._store)))
            value = self._build(*key)
            self._store[full_key] = _to(value, device, dtype)
        return self._store[full_key]

    def clear(self) -> None:
        self._store.clear()


def size_mismatch(fixed_hw: tuple[int, int], got: str) -> ValueError:
    """The one-line error of a module fixed to inputs of `fixed_hw` = (H, W) given something else."""
    h, w = fixed_hw
    return ValueError(f"fixed to {h}x{w} inputs by fix_size, got {got}; make a copy for another size with "
                      f"optimize_for_inference(model, imgsz=(H, W)) or copy.deepcopy(model).fix_size((H, W))")


def _to(value, device, dtype):
    if isinstance(value, tuple):
        return tuple(_to(v, device, dtype) for v in value)
    if dtype is not None and value.is_floating_point():
        return value.to(device=device, dtype=dtype)
    return value.to(device=device)
