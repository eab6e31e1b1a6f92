"""One decoder layer: self-attention over the queries, deformable cross-attention into the
encoder memory, FFN; post-norm. The D-FINE family merges the cross-attention through a learnt
`Gate` instead of residual + norm (`DecoderConfig.gate`)."""
from __future__ import annotations

import torch
from torch import nn

from rtdetr.models.config import DecoderConfig
from rtdetr.models.nn.common import get_activation
from rtdetr.models.nn.deformable_attention import MSDeformableAttention


class Gate(nn.Module):
    """`norm(g1 * x + g2 * y)` with `g1, g2 = sigmoid(Linear(cat[x, y]))` split in halves; the gates
    start at 0.5 (zero weight and bias). x, y [..., C] -> [..., C]; keys `gate.*`, `norm.*`."""

    def __init__(self, d_model: int):
        super().__init__()
        self.gate = nn.Linear(2 * d_model, 2 * d_model)
        self.norm = nn.LayerNorm(d_model)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g1, g2 = torch.sigmoid(self.gate(torch.cat([x, y], dim=-1))).chunk(2, dim=-1)
        return self.norm(g1 * x + g2 * y)


class DecoderLayer(nn.Module):
    """Post-norm: self-attention, deformable cross-attention (merged by residual + `norm2`, or by
    `gateway` with `cfg.gate`), FFN with `cfg.activation`."""

    def __init__(self, d_model: int, cfg: DecoderConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, cfg.nhead, dropout=cfg.dropout, batch_first=True)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(d_model, cfg.nhead, cfg.num_points, cfg.cross_attn_method,
                                                projections=cfg.value_proj)
        self.dropout2 = nn.Dropout(cfg.dropout)
        if cfg.gate:
            self.gateway = Gate(d_model)
        else:
            self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, cfg.dim_feedforward)
        self.activation = get_activation(cfg.activation)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(cfg.dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.clamp_before_norm = cfg.clamp_before_norm
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, target: torch.Tensor, ref_boxes: torch.Tensor, memory: torch.Tensor,
                spatial_shapes: list[tuple[int, int]], query_pos: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """target [B, Q, C], ref_boxes [B, Q, 1, 4], memory [B, L, C], query_pos [B, Q, C] -> [B, Q, C]."""
        q = k = target + query_pos
        attn, _ = self.self_attn(q, k, value=target, attn_mask=attn_mask, need_weights=False)
        target = self.norm1(target + self.dropout1(attn))
        cross = self.dropout2(self.cross_attn(target + query_pos, ref_boxes, memory, spatial_shapes))
        target = self.gateway(target, cross) if hasattr(self, "gateway") else self.norm2(target + cross)
        target = target + self.dropout4(self.linear2(self.dropout3(self.activation(self.linear1(target)))))
        if self.clamp_before_norm:
            target = target.clamp(min=-65504, max=65504)
        return self.norm3(target)
