"""Explicit dataclass configurations of an RT-DETR model.

A model is fully described by a `ModelConfig`; the named architectures of the zoo
(`rtdetr.models.zoo`) are plain instances of it. No registry, no YAML.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class BackboneConfig:
    """`name`: presnet18 / presnet34 / presnet50 / presnet101 (ResNet-vd), hgnetv2_l / _x / _h
    (RT-DETRv2) or hgnetv2_b0 ... _b6 (D-FINE / DEIM / RT-DETRv4; b4-b6 are l-h).

    `freeze_at`: freeze the stem and the first `freeze_at` stages (-1: nothing).
    `freeze_norm`: batch norms become FrozenBatchNorm2d (as in the official r50/r101/HGNetv2 configs).
    `use_lab`: HGNetv2's learnable affine after every activation (the D-FINE B0-B3 configs).
    """

    name: str = "presnet18"
    freeze_at: int = -1
    freeze_norm: bool = False
    use_lab: bool = False


@dataclass(frozen=True)
class EncoderConfig:
    """Hybrid encoder: AIFI (transformer layers on the stride-32 map) + CCFF (CSP-RepVGG fusion)."""

    hidden_dim: int = 256
    dim_feedforward: int = 1024
    num_encoder_layers: int = 1
    nhead: int = 8
    dropout: float = 0.0
    expansion: float = 1.0
    depth_mult: float = 1.0
    pe_temperature: float = 10000.0


@dataclass(frozen=True)
class DecoderConfig:
    """Deformable transformer decoder with uncertainty-minimal query selection.

    `num_points`: sampling points per feature level (v2 may differ per level).
    `cross_attn_method`: "default" (bilinear grid_sample) or "discrete" (nearest, gather only).
    `eval_layers`: decoder layers run at inference (None: all); the official `eval_idx + 1`.
    `clamp_before_norm`: v1 layers clamp the FFN output to the fp16 range before the last norm.
    """

    hidden_dim: int = 256
    num_layers: int = 6
    eval_layers: int | None = None
    num_queries: int = 300
    nhead: int = 8
    dim_feedforward: int = 1024
    dropout: float = 0.0
    num_points: tuple[int, ...] = (4, 4, 4)
    cross_attn_method: str = "default"
    num_denoising: int = 100
    label_noise_ratio: float = 0.5
    box_noise_scale: float = 1.0
    clamp_before_norm: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """A whole detector. `version` is "v1" or "v2" (it only decides official key names on export)."""

    name: str = "custom"
    version: str = "v2"
    num_classes: int = 80
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        dec = dict(d["decoder"])
        dec["num_points"] = tuple(dec["num_points"])
        return cls(
            name=d["name"],
            version=d["version"],
            num_classes=d["num_classes"],
            backbone=BackboneConfig(**d["backbone"]),
            encoder=EncoderConfig(**d["encoder"]),
            decoder=DecoderConfig(**dec),
        )

    def with_classes(self, num_classes: int) -> "ModelConfig":
        return replace(self, num_classes=num_classes)
