"""Hybrid encoder: AIFI (intra-scale attention on the stride-32 map) + CCFF (cross-scale fusion).

Input: backbone maps [C3, C4, C5]; output: [P3, P4, P5], each [B, hidden_dim, H/s, W/s].

For inference, `fuse_model` (rtdetr.models.reparam) folds the conv + norm and RepVGG blocks
through their `fuse()`, and `fix_size(hw)` turns the per-size cache of AIFI position embeddings
into one buffer; the forward below is the same in every case.
"""
from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.models.config import EncoderConfig
from rtdetr.models.nn.common import ConvNorm, ConvNormLayer, get_activation
from rtdetr.models.nn.fusion import CSPRepLayer, RepVggBlock, downsample_block, fusion_block
from rtdetr.models.nn.position import SizeCache, sincos_position_embedding, size_mismatch

__all__ = ["HybridEncoder", "TransformerEncoderLayer", "CSPRepLayer", "RepVggBlock"]


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
    """AIFI on one level: `num_layers` encoder layers sharing one position embedding.

    `pos_embed` [1, h*w, C] is a non-persistent buffer, None until `HybridEncoder.fix_size` sets it.
    """

    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.register_buffer("pos_embed", None, persistent=False)

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos_embed)
        return src


class HybridEncoder(nn.Module):
    """AIFI on the last level (`use_encoder_idx`), then top-down (FPN) and bottom-up (PAN) CCFF fusion.

    `channels_last`: keep AIFI's output in the channels-last layout its token view already has
    (for a copy whose convolutions run channels-last); False (default) copies it to NCHW.
    """

    def __init__(self, in_channels: list[int], feat_strides: list[int], cfg: EncoderConfig,
                 use_encoder_idx: tuple[int, ...] | None = None, act: str = "silu"):
        super().__init__()
        hd = cfg.hidden_dim
        self.hidden_dim = hd
        self.in_channels = list(in_channels)
        self.feat_strides = list(feat_strides)
        # AIFI runs on the coarsest level by default (index 2 of three levels, 1 of two).
        self.use_encoder_idx = [len(in_channels) - 1] if use_encoder_idx is None else list(use_encoder_idx)
        self.pe_temperature = cfg.pe_temperature
        self.out_channels = [hd] * len(in_channels)
        self.out_strides = list(feat_strides)

        self.input_proj = nn.ModuleList(ConvNorm(c, hd) for c in in_channels)
        layer = TransformerEncoderLayer(hd, cfg.nhead, cfg.dim_feedforward, cfg.dropout, act="gelu")
        self.encoder = nn.ModuleList(
            TransformerEncoder(layer, cfg.num_encoder_layers) for _ in self.use_encoder_idx)

        num_blocks = round(3 * cfg.depth_mult)
        n = len(in_channels)
        lateral_act = act if cfg.lateral_act else None
        self.lateral_convs = nn.ModuleList(ConvNormLayer(hd, hd, 1, 1, act=lateral_act) for _ in range(n - 1))
        self.fpn_blocks = nn.ModuleList(
            fusion_block(cfg.fusion_block, hd, num_blocks, cfg.expansion, act) for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(downsample_block(cfg.downsample, hd, act) for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(
            fusion_block(cfg.fusion_block, hd, num_blocks, cfg.expansion, act) for _ in range(n - 1))

        # A partial, not a lambda over self: a deep copy of the module must not call back into the original.
        self.pos_layout = cfg.pos_layout
        self._pos_cache = SizeCache(functools.partial(sincos_position_embedding, dim=hd, temperature=cfg.pe_temperature,
                                                      layout=cfg.pos_layout))
        self.fixed_hw: tuple[int, int] | None = None  # the input size of `fix_size`, if any
        self.channels_last = False

    def fix_size(self, hw: tuple[int, int] | None) -> None:
        """Compute the AIFI position embeddings once, for inputs of hw = (H, W) pixels, as
        non-persistent buffers (the state dict is unchanged); the forward then takes only that
        size. None goes back to any size (a per-size cache)."""
        self.fixed_hw = None if hw is None else (int(hw[0]), int(hw[1]))
        ref = next(self.parameters())
        for encoder, idx in zip(self.encoder, self.use_encoder_idx):
            pe = None
            if hw is not None:
                h, w = self._map_size(idx)
                pe = sincos_position_embedding(w, h, self.hidden_dim, self.pe_temperature,
                                               self.pos_layout).to(ref.device, ref.dtype)
            encoder.pos_embed = pe

    def _map_size(self, idx: int) -> tuple[int, int]:
        stride = self.feat_strides[idx]
        return self.fixed_hw[0] // stride, self.fixed_hw[1] // stride

    def position_embedding(self, k: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """[1, h*w, hidden_dim] for the h x w map of AIFI level k: the fixed buffer, else cached per size."""
        encoder = self.encoder[k]
        if encoder.pos_embed is None:
            return self._pos_cache.get((w, h), like.device, like.dtype)
        if (h, w) != self._map_size(self.use_encoder_idx[k]):
            raise size_mismatch(self.fixed_hw, f"a {h}x{w} map at stride {self.feat_strides[self.use_encoder_idx[k]]}")
        return encoder.pos_embed

    def attend(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The input projections, then AIFI on its level(s): [B, hidden_dim, H/s, W/s] per level.
        The AIFI output (F5 of the stride-32 level) is what RT-DETRv4's distillation teaches."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(feats)}")
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        for k, (encoder, idx) in enumerate(zip(self.encoder, self.use_encoder_idx)):
            b, c, h, w = proj[idx].shape
            tokens = proj[idx].flatten(2).permute(0, 2, 1)  # [B, h*w, C]
            memory = encoder(tokens, self.position_embedding(k, h, w, tokens))
            # [B, h*w, C] viewed as [B, C, h, w] is channels-last already: NCHW needs a copy.
            memory = memory.permute(0, 2, 1).reshape(b, c, h, w)
            proj[idx] = memory if self.channels_last else memory.contiguous()
        return proj

    def forward(self, feats: list[torch.Tensor], with_aifi: bool = False):
        """[P3, P4, P5]; with_aifi: ([P3, P4, P5], F5), F5 being AIFI's output (for distillation)."""
        attended = self.attend(feats)
        outs = self.ccff(attended)
        return (outs, attended[self.use_encoder_idx[-1]]) if with_aifi else outs

    def ccff(self, proj: list[torch.Tensor]) -> list[torch.Tensor]:
        """CCFF on the maps of `attend`: [P3, P4, P5], each [B, hidden_dim, H/s, W/s]."""
        # Top-down: each lateral conv output replaces its map among the inner outputs.
        n = len(proj)
        inner = [proj[-1]]
        for k, idx in enumerate(range(n - 1, 0, -1)):
            high = self.lateral_convs[k](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[k](torch.cat([up, proj[idx - 1]], dim=1)))

        # Bottom-up.
        outs = [inner[0]]
        for k in range(n - 1):
            down = self.downsample_convs[k](outs[-1])
            outs.append(self.pan_blocks[k](torch.cat([down, inner[k + 1]], dim=1)))
        return outs
