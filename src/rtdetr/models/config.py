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
    `return_idx`: the stages whose outputs feed the encoder (1, 2, 3: strides 8, 16, 32; the
    two-level D-FINE N model uses 2, 3).
    """

    name: str = "presnet18"
    freeze_at: int = -1
    freeze_norm: bool = False
    use_lab: bool = False
    return_idx: tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class EncoderConfig:
    """Hybrid encoder: AIFI (transformer layers on the stride-32 map) + CCFF (cross-scale fusion).

    `fusion_block`: the CCFF block, "csp" (RT-DETR's CSP block of RepVGG bottlenecks) or "elan"
    (D-FINE's RepNCSPELAN4: two CSP branches chained, all outputs concatenated).
    `downsample`: the bottom-up downsampling, "conv" (3x3 stride-2 conv + norm + act) or
    "scdown" (D-FINE: 1x1 conv + norm, then depthwise 3x3 stride-2 conv + norm, no activation).
    `lateral_act`: the top-down lateral 1x1 convs end with the activation (RT-DETR) or not (D-FINE).
    `pos_layout`: AIFI's sin-cos position embedding on non-square maps, "official" (as the
    official models compute it: on a rectangular map cells get other cells' embeddings) or
    "consistent" (each cell gets the embedding of its own row and column, as on the square maps
    of training); both are the same on square maps (rtdetr.models.nn.position).
    """

    hidden_dim: int = 256
    dim_feedforward: int = 1024
    num_encoder_layers: int = 1
    nhead: int = 8
    dropout: float = 0.0
    expansion: float = 1.0
    depth_mult: float = 1.0
    pe_temperature: float = 10000.0
    fusion_block: str = "csp"
    downsample: str = "conv"
    lateral_act: bool = True
    pos_layout: str = "official"


@dataclass(frozen=True)
class DecoderConfig:
    """Deformable transformer decoder with uncertainty-minimal query selection.

    `num_points`: sampling points per feature level (v2 may differ per level).
    `cross_attn_method`: "default" (bilinear grid_sample) or "discrete" (nearest, gather only).
    `eval_layers`: decoder layers run at inference (None: all); the official `eval_idx + 1`.
    `clamp_before_norm`: v1 and D-FINE layers clamp the FFN output to the fp16 range before the last norm.

    D-FINE family switches (the defaults are RT-DETR's):
    `refinement`: "box" (each layer refines the previous box's logits) or "distribution"
    (D-FINE: each layer refines distributions over `reg_max + 1` edge offsets of one initial
    box, from a pre-box head on layer 0, with a quality head (LQE) added to the class logits;
    `reg_scale` sets how far the offsets reach, rtdetr.models.nn.distribution).
    `value_proj`: the cross-attention has value and output projections (RT-DETR) or samples the
    memory itself (D-FINE). `gate`: a learnt gate merges the cross-attention output (D-FINE)
    instead of residual + norm. `activation`: of the layers' FFN (and the LQE); `mlp_act`: of the
    query-position and box-head MLPs. `query_pos`: "default" (MLP 4 -> 2d -> d) or "as_reg"
    (DEIM on RT-DETRv2: MLP 4 -> d -> d -> d). `query_pos_clamp`: clamp the query position
    embedding to +-this (D-FINE: 10), None: no clamp. `project_equal_levels`: levels whose
    channels already equal `hidden_dim` still get an input projection (RT-DETR) or none (D-FINE).
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
    refinement: str = "box"
    reg_max: int = 32
    reg_scale: float = 4.0
    value_proj: bool = True
    gate: bool = False
    activation: str = "relu"
    mlp_act: str = "relu"
    query_pos: str = "default"
    query_pos_clamp: float | None = None
    project_equal_levels: bool = True


@dataclass(frozen=True)
class MaskConfig:
    """Instance masks (rtdetr.models.nn.mask_head): `dim`, the channels of the 1/4-resolution
    pixel features and of each query's mask embedding; `act`, the pixel decoder's activation."""

    dim: int = 128
    act: str = "silu"


@dataclass(frozen=True)
class ModelConfig:
    """A whole detector. `version` names the official code base: "v1", "v2", "dfine", "deim" or
    "rtv4" (the architecture is in the fields; it decides official key names and defaults).
    `mask`: an instance-mask head on the same detector (None: detection only)."""

    name: str = "custom"
    version: str = "v2"
    num_classes: int = 80
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    mask: MaskConfig | None = None

    @property
    def task(self) -> str:
        """The task: "segment" with a mask head, else "detect"."""
        return "detect" if self.mask is None else "segment"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        dec = dict(d["decoder"])
        dec["num_points"] = tuple(dec["num_points"])
        backbone = dict(d["backbone"])
        if "return_idx" in backbone:
            backbone["return_idx"] = tuple(backbone["return_idx"])
        # `distill_dim`: earlier checkpoints' field for RT-DETRv4's projector, now the trainer's.
        encoder = {k: v for k, v in d["encoder"].items() if k != "distill_dim"}
        return cls(
            name=d["name"],
            version=d["version"],
            num_classes=d["num_classes"],
            backbone=BackboneConfig(**backbone),
            encoder=EncoderConfig(**encoder),
            decoder=DecoderConfig(**dec),
            mask=MaskConfig(**d["mask"]) if d.get("mask") else None,
        )

    def with_classes(self, num_classes: int) -> "ModelConfig":
        return replace(self, num_classes=num_classes)
