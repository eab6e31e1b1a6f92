"""The instance-mask head: a pixel decoder on the encoder's maps and a mask embedding per query.

    features = head.pixel_decoder([P3, P4, P5])     # [B, C, H/4, W/4]
    queries  = head.embed(decoder_queries)           # [B, Q, C]
    logits   = einsum("bqc,bchw->bqhw", queries, features)   # a mask: logits > 0

Pixel decoder (after D-FINE-seg's): each encoder level gets a lateral 1x1 conv + norm to C
channels; they are upsampled (bilinear) to the finest level and summed; a 3x3 conv + norm + act
mixes them there; a bilinear upsampling brings the map to 1/4 of the input, where a depthwise 3x3
conv + norm + act and a pointwise conv refine it. A CNN backbone has no single map both rich and
fine enough (RF-DETR's stride-12 ViT map is), hence the fusion; the heavy 3x3 conv runs at the
coarser level and only depthwise and 1x1 convs at 1/4, which keeps the head cheap at 640x640.

Mask embedding: a 3-layer MLP on each decoder layer's query features (shared by the layers, the
denoising queries and the encoder's proposals), scaled by 1/sqrt(C) so that a logit's size does
not grow with C.

The head never forms the dense logits of all queries: the outputs are the factors
(`mask_features`, `mask_queries`); the losses sample them at points and post-processing
multiplies only the selected queries (`rtdetr.models.postprocess.mask_logits`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.models.config import MaskConfig
from rtdetr.models.nn.common import MLP, ConvNormLayer

MASK_STRIDE = 4  # the mask features' stride: 1/4 of the network input


class PixelDecoder(nn.Module):
    """Encoder maps (strides e.g. 8, 16, 32, `in_channels` each) -> [B, C, H/4, W/4]."""

    def __init__(self, in_channels: list[int], in_strides: list[int], dim: int, act: str = "silu"):
        super().__init__()
        finest = min(in_strides)
        if finest % MASK_STRIDE:
            raise ValueError(f"the finest encoder stride ({finest}) must be a multiple of {MASK_STRIDE}")
        self.up_factor = finest // MASK_STRIDE
        self.lateral = nn.ModuleList(ConvNormLayer(c, dim, 1) for c in in_channels)
        self.fuse = ConvNormLayer(dim, dim, 3, act=act)
        self.refine = ConvNormLayer(dim, dim, 3, act=act, groups=dim)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        finest = feats[0].shape[-2:]
        x = self.lateral[0](feats[0])
        for lateral, f in zip(self.lateral[1:], feats[1:]):
            x = x + F.interpolate(lateral(f), size=finest, mode="bilinear", align_corners=False)
        x = self.fuse(x)
        if self.up_factor > 1:
            x = F.interpolate(x, scale_factor=float(self.up_factor), mode="bilinear", align_corners=False)
        return self.out(self.refine(x))


class MaskHead(nn.Module):
    """`pixel_decoder` (keys `pixel_decoder.*`) and `mask_embed` (a 3-layer MLP, `mask_embed.layers.*`)."""

    def __init__(self, in_channels: list[int], in_strides: list[int], hidden_dim: int, cfg: MaskConfig):
        super().__init__()
        self.dim = cfg.dim
        self.pixel_decoder = PixelDecoder(in_channels, in_strides, cfg.dim, act=cfg.act)
        self.mask_embed = MLP(hidden_dim, hidden_dim, cfg.dim, 3, act="relu")
        self.scale = cfg.dim ** -0.5

    def embed(self, queries: torch.Tensor) -> torch.Tensor:
        """Decoder query features [B, Q, hidden_dim] -> mask embeddings [B, Q, C]."""
        return self.mask_embed(queries) * self.scale

    def forward(self, feats: list[torch.Tensor], out: dict) -> dict:
        """Add the mask factors to the decoder's output `out` (in place; returned).

        Every level that carries its query features under 'queries' [B, Q, hidden_dim] (the
        decoder's with `return_queries`) gets 'mask_queries' [B, Q, C] in their place. In eval
        mode `out` gets 'mask_features' [B, C, H/4, W/4]; in train mode every such level gets
        it too (the matcher and the losses see one level at a time).
        """
        features = self.pixel_decoder(feats)
        out["mask_features"] = features
        levels = [out, *out.get("aux_outputs", []), *out.get("dn_aux_outputs", []), *out.get("enc_aux_outputs", [])]
        for level in levels:
            if "queries" in level:
                level["mask_queries"] = self.embed(level.pop("queries"))
                if level is not out:
                    level["mask_features"] = features
        return out
