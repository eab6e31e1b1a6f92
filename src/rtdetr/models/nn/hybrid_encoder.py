"""Hybrid encoder: AIFI (intra-scale attention on the stride-32 map) + CCFF (cross-scale fusion).

Input: backbone maps [C3, C4, C5]; output: [P3, P4, P5], each [B, hidden_dim, H/s, W/s].
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.models.config import EncoderConfig
from rtdetr.models.nn.common import ConvNormLayer, get_activation
from rtdetr.models.nn.position import SizeCache, sincos_position_embedding


class RepVggBlock(nn.Module):
    """`act(BN(conv3x3(x)) + BN(conv1x1(x)))`: two branches at training time, one 3x3 conv when fused."""

    def __init__(self, ch_in: int, ch_out: int, act: str = "silu"):
        super().__init__()
        self.conv1 = ConvNormLayer(ch_in, ch_out, 3, 1, padding=1)
        self.conv2 = ConvNormLayer(ch_in, ch_out, 1, 1, padding=0)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """CSP block: `conv3(bottlenecks(conv1(x)) + conv2(x))` with RepVGG bottlenecks."""

    def __init__(self, ch_in: int, ch_out: int, num_blocks: int = 3, expansion: float = 1.0, act: str = "silu"):
        super().__init__()
        hidden = int(ch_out * expansion)
        self.conv1 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.conv2 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, hidden, act=act) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, ch_out, 1, 1, act=act) if hidden != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer layer; the position embedding is added to queries and keys only."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0, act: str = "gelu"):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = get_activation(act)

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        """src [B, L, C], pos_embed [1, L, C] -> [B, L, C]."""
        q = k = src + pos_embed
        attn, _ = self.self_attn(q, k, value=src, need_weights=False)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos_embed)
        return src


def _projection(ch_in: int, hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(ch_in, hidden_dim, kernel_size=1, bias=False)),
        ("norm", nn.BatchNorm2d(hidden_dim)),
    ]))


class HybridEncoder(nn.Module):
    """AIFI on the last level (`use_encoder_idx`), then top-down (FPN) and bottom-up (PAN) CCFF fusion."""

    def __init__(self, in_channels: list[int], feat_strides: list[int], cfg: EncoderConfig,
                 use_encoder_idx: tuple[int, ...] = (2,), act: str = "silu"):
        super().__init__()
        hd = cfg.hidden_dim
        self.hidden_dim = hd
        self.in_channels = list(in_channels)
        self.feat_strides = list(feat_strides)
        self.use_encoder_idx = list(use_encoder_idx)
        self.pe_temperature = cfg.pe_temperature
        self.out_channels = [hd] * len(in_channels)
        self.out_strides = list(feat_strides)

        self.input_proj = nn.ModuleList(_projection(c, hd) for c in in_channels)
        layer = TransformerEncoderLayer(hd, cfg.nhead, cfg.dim_feedforward, cfg.dropout, act="gelu")
        self.encoder = nn.ModuleList(
            TransformerEncoder(layer, cfg.num_encoder_layers) for _ in self.use_encoder_idx)

        num_blocks = round(3 * cfg.depth_mult)
        n = len(in_channels)
        self.lateral_convs = nn.ModuleList(ConvNormLayer(hd, hd, 1, 1, act=act) for _ in range(n - 1))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(2 * hd, hd, num_blocks, cfg.expansion, act) for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(ConvNormLayer(hd, hd, 3, 2, act=act) for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(2 * hd, hd, num_blocks, cfg.expansion, act) for _ in range(n - 1))

        self._pos_cache = SizeCache(lambda w, h: sincos_position_embedding(w, h, hd, self.pe_temperature))

    def position_embedding(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """[1, h*w, hidden_dim] for a feature map of h x w, cached per size."""
        return self._pos_cache.get((w, h), like.device, like.dtype)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(feats)}")
        proj = [p(f) for p, f in zip(self.input_proj, feats)]

        for encoder, idx in zip(self.encoder, self.use_encoder_idx):
            b, c, h, w = proj[idx].shape
            tokens = proj[idx].flatten(2).permute(0, 2, 1)  # [B, h*w, C]
            memory = encoder(tokens, self.position_embedding(h, w, tokens))
            proj[idx] = memory.permute(0, 2, 1).reshape(b, c, h, w).contiguous()

        return cross_scale_fusion(self, proj)


def cross_scale_fusion(enc: nn.Module, proj: list[torch.Tensor]) -> list[torch.Tensor]:
    """CCFF over [P3, P4, P5] (after AIFI): top-down then bottom-up, with `enc`'s lateral_convs,
    fpn_blocks, downsample_convs and pan_blocks. Shared by the inference-only encoder copy."""
    # Top-down: each lateral conv output replaces its map among the inner outputs.
    n = len(proj)
    inner = [proj[-1]]
    for k, idx in enumerate(range(n - 1, 0, -1)):
        high = enc.lateral_convs[k](inner[0])
        inner[0] = high
        up = F.interpolate(high, scale_factor=2.0, mode="nearest")
        inner.insert(0, enc.fpn_blocks[k](torch.cat([up, proj[idx - 1]], dim=1)))

    # Bottom-up.
    outs = [inner[0]]
    for k in range(n - 1):
        down = enc.downsample_convs[k](outs[-1])
        outs.append(enc.pan_blocks[k](torch.cat([down, inner[k + 1]], dim=1)))
    return outs
