"""The RT-DETR detector (and the D-FINE family, by configuration): backbone -> hybrid encoder -> decoder."""
from __future__ import annotations

import torch
from torch import nn

from rtdetr.core.sizes import check_imgsz
from rtdetr.models.config import ModelConfig
from rtdetr.models.outputs import DetectorOutput
from rtdetr.models.nn.decoder import RTDETRDecoder
from rtdetr.models.nn.hybrid_encoder import HybridEncoder


def build_backbone(cfg: ModelConfig) -> nn.Module:
    b = cfg.backbone
    if b.name.startswith("presnet"):
        from rtdetr.models.nn.presnet import PResNet
        return PResNet(int(b.name[len("presnet"):]), return_idx=b.return_idx, freeze_at=b.freeze_at,
                       freeze_norm=b.freeze_norm)
    if b.name.startswith("hgnetv2_"):
        from rtdetr.models.nn.hgnetv2 import HGNetv2
        return HGNetv2(b.name[len("hgnetv2_"):].upper(), return_idx=b.return_idx, freeze_at=b.freeze_at,
                       freeze_norm=b.freeze_norm, use_lab=b.use_lab)
    raise ValueError(f"unknown backbone {b.name!r}")


class RTDETR(nn.Module):
    """`model(x [B, 3, H, W] RGB in [0, 1])` -> `rtdetr.models.outputs.DetectorOutput`.

    H and W may be any multiples of 32. `num_decoder_layers` picks how many decoder
    layers run (the speed/accuracy dial), per call or for good with `set_decoder_layers`.
    In train mode, `targets` (per image {'labels' [n], 'boxes' [n, 4] cx, cy, w, h normalised})
    add the denoising queries, and the output holds AIFI's map F5 as `aifi` (for distillation).
    With a mask head (`cfg.mask`) the output also holds the mask factors, 'mask_features'
    [B, C, H/4, W/4] and per level 'mask_queries' [B, Q, C] (rtdetr.models.nn.mask_head).
    Pure: configuration in, tensors out; loading, training, prediction and export are the
    `rtdetr.Detector` facade's.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        self.encoder = HybridEncoder(self.backbone.out_channels, self.backbone.out_strides, cfg.encoder)
        self.decoder = RTDETRDecoder(
            cfg.num_classes, cfg.decoder.hidden_dim, self.encoder.out_channels, self.encoder.out_strides, cfg.decoder)
        self.mask_head = None
        if cfg.mask is not None:
            from rtdetr.models.nn.mask_head import MaskHead
            self.mask_head = MaskHead(self.encoder.out_channels, self.encoder.out_strides, cfg.decoder.hidden_dim,
                                      cfg.mask)
            self.decoder.return_queries = True

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def set_decoder_layers(self, n: int) -> None:
        self.decoder.set_eval_layers(n)

    def fix_size(self, hw: int | tuple[int, int] | None) -> "RTDETR":
        """Compute the size-dependent constants (AIFI position embedding, anchors, valid mask) once,
        for inputs of hw = (H, W) (an int: square), as non-persistent buffers; other sizes are then
        refused. None goes back to any multiple of 32. Returns the model."""
        hw = None if hw is None else check_imgsz(hw)
        self.decoder.fix_size(hw)  # first: it refuses too small a size before anything changes
        self.encoder.fix_size(hw)
        return self

    def forward(self, x: torch.Tensor, num_decoder_layers: int | None = None,
                targets: list[dict] | None = None) -> DetectorOutput:
        h, w = x.shape[-2:]
        if x.ndim != 4 or x.shape[1] != 3 or h % 32 or w % 32:
            raise ValueError(f"expected input [B, 3, H, W] with H and W multiples of 32, got {list(x.shape)}")
        # The encoder is called as a module (exported graphs name their nodes by module scope).
        encoded = self.encoder(self.backbone(x), with_aifi=self.training)
        feats, aifi = encoded if self.training else (encoded, None)
        out = self.decoder(feats, num_layers=num_decoder_layers, targets=targets)
        if self.mask_head is not None:
            out = self.mask_head(feats, out)
        if aifi is not None:  # for training-only terms (RT-DETRv4's distillation teaches this map)
            out["aifi"] = aifi
        return out


def build_model(cfg: ModelConfig) -> RTDETR:
    return RTDETR(cfg)


def module_of(model):
    """The network behind a facade that holds one (`rtdetr.Detector.model`), else `model` itself."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    return inner if inner is not None else model
