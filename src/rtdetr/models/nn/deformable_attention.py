"""Multi-scale deformable attention (RT-DETRv2 form: per-level point counts, discrete sampling)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sample_bilinear(value: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """value [N, C, H, W], loc [N, Lq, P, 2] in [0, 1] (x, y) -> [N, C, Lq, P]; zeros outside."""
    return F.grid_sample(value, 2 * loc - 1, mode="bilinear", padding_mode="zeros", align_corners=False)


def sample_discrete(value: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """Nearest-cell gather (no GridSample op). value [N, C, H, W], loc [N, Lq, P, 2] -> [N, C, Lq, P].

    Each axis is clamped to its own extent, so wide and tall inputs sample the right cells.
    """
    n, c, h, w = value.shape
    lq, p = loc.shape[1:3]
    coord = (loc * torch.tensor([w, h], device=loc.device, dtype=loc.dtype) + 0.5).to(torch.int64)
    x = coord[..., 0].clamp(0, w - 1).reshape(n, lq * p)
    y = coord[..., 1].clamp(0, h - 1).reshape(n, lq * p)
    # Gather as [N, Lq*P, C] and return a permuted view: the reduction over points that
    # follows then adds in the same order as the official model (bit-identical outputs).
    cells = value.flatten(2).transpose(1, 2)  # [N, H*W, C]
    index = (y * w + x).unsqueeze(-1).expand(n, lq * p, c)
    return cells.gather(1, index).permute(0, 2, 1).reshape(n, c, lq, p)


class MSDeformableAttention(nn.Module):
    """Each query attends to `num_points[l]` learnt locations around its reference box on level `l`.

    Keys: `sampling_offsets`, `attention_weights`, and with `projections` (RT-DETR; D-FINE has
    none: the heads sample the memory itself and their outputs are concatenated) `value_proj`,
    `output_proj`.
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_points: tuple[int, ...] = (4, 4, 4),
                 method: str = "default", offset_scale: float = 0.5, projections: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        if method not in ("default", "discrete"):
            raise ValueError(f"cross-attention method must be 'default' or 'discrete', got {method!r}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.num_points = list(num_points)
        self.method = method
        self.offset_scale = offset_scale
        total = sum(self.num_points)
        # Offsets are scaled by 1/P of their level; computed, not loaded (official v2 stores it).
        scale = [1.0 / n for n in self.num_points for _ in range(n)]
        self.register_buffer("num_points_scale", torch.tensor(scale, dtype=torch.float32), persistent=False)

        self.sampling_offsets = nn.Linear(embed_dim, num_heads * total * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * total)
        self.value_proj = nn.Linear(embed_dim, embed_dim) if projections else None
        self.output_proj = nn.Linear(embed_dim, embed_dim) if projections else None
        self.reset_parameters()
        if method == "discrete":  # nearest sampling has no gradient w.r.t. the offsets
            self.sampling_offsets.requires_grad_(False)

    def reset_parameters(self) -> None:
        """Offsets start on a ring of directions, one per head, at distances 1..P."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.reshape(self.num_heads, 1, 2).tile([1, sum(self.num_points), 1])
        distance = torch.cat([torch.arange(1, n + 1) for n in self.num_points]).reshape(1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((grid * distance).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        if self.value_proj is None:
            return
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, ref_boxes: torch.Tensor, value: torch.Tensor,
                spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """
        query      [B, Lq, C]
        ref_boxes  [B, Lq, 1, 4] reference boxes, normalised cx, cy, w, h
        value      [B, Lv, C] flattened multi-level memory, Lv = sum(h*w)
        returns    [B, Lq, C]
        """
        b, lq = query.shape[:2]
        heads, total = self.num_heads, sum(self.num_points)
        if self.value_proj is not None:
            value = self.value_proj(value)
        value = value.reshape(b, -1, heads, self.head_dim)

        offsets = self.sampling_offsets(query).reshape(b, lq, heads, total, 2)
        weights = self.attention_weights(query).reshape(b, lq, heads, total).softmax(-1)

        scale = self.num_points_scale.to(query.dtype).unsqueeze(-1)
        offset = offsets * scale * ref_boxes[:, :, None, :, 2:] * self.offset_scale
        locations = ref_boxes[:, :, None, :, :2] + offset  # [B, Lq, heads, total, 2]

        # Per level: value [B*heads, head_dim, h, w], locations [B*heads, Lq, P_l, 2].
        values = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in spatial_shapes], dim=-1)
        locs = locations.permute(0, 2, 1, 3, 4).flatten(0, 1).split(self.num_points, dim=-2)
        sample = sample_bilinear if self.method == "default" else sample_discrete
        sampled = [
            sample(v.reshape(b * heads, self.head_dim, h, w), loc)
            for v, loc, (h, w) in zip(values, locs, spatial_shapes)
        ]
        weights = weights.permute(0, 2, 1, 3).reshape(b * heads, 1, lq, total)
        out = (torch.cat(sampled, dim=-1) * weights).sum(-1).reshape(b, heads * self.head_dim, lq)
        out = out.permute(0, 2, 1)
        return out if self.output_proj is None else self.output_proj(out)
