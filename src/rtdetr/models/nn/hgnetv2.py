"""HGNetv2 backbone: the B0-B6 variants (D-FINE, DEIM, RT-DETRv4; B4-B6 are RT-DETRv2's L, X, H).

HGNetv2 is a convolutional backbone built from "HG blocks": a chain of small convolutions
whose outputs are all concatenated and then squeezed back down with two 1x1 convolutions.

Layout of the network for an input of shape [B, 3, H, W]:

    stem      -> [B, C_stem, H/4,  W/4]
    stages.0  -> [B, C_0,    H/4,  W/4]   (no downsampling)
    stages.1  -> [B, C_1,    H/8,  W/8]
    stages.2  -> [B, C_2,    H/16, W/16]
    stages.3  -> [B, C_3,    H/32, W/32]

`forward` returns the outputs of the stages listed in `return_idx` (by default 1, 2, 3).

The module and parameter names reproduce the key layout of the official RT-DETRv2
checkpoints (`rtdetrv2_hgnetv2_{l,x,h}_6x_coco.yml`, `use_lab=False`) without the
`backbone.` prefix, e.g. `stem.stem2a.conv.1.weight`,
`stages.2.blocks.0.layers.0.conv2.bn.running_var`,
`stages.3.blocks.0.aggregation_excitation_conv.conv.weight`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rtdetr.models.nn.common import apply_freezing
from rtdetr.models.reparam import conv_act, fold_norm

__all__ = ["HGNetv2", "HGNetv2Arch", "StageSpec", "ARCHITECTURES"]


# --------------------------------------------------------------------------------------
# Per-variant architecture settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    """Settings of one stage.

    in_channels:  channels entering the stage
    mid_channels: channels of every inner convolution of an HG block
    out_channels: channels leaving the stage
    num_blocks:   number of HG blocks in the stage
    downsample:   whether a stride-2 depthwise conv starts the stage
    light_block:  inner layers are "light" (1x1 conv + depthwise kxk) instead of a full kxk conv
    kernel_size:  kernel size of the inner convolutions
    num_layers:   number of inner convolutions per HG block
    """

    in_channels: int
    mid_channels: int
    out_channels: int
    num_blocks: int
    downsample: bool
    light_block: bool
    kernel_size: int
    num_layers: int = 6


@dataclass(frozen=True)
class HGNetv2Arch:
    """Architecture of one HGNetv2 variant: stem channels and the four stages."""

    stem_in: int
    stem_mid: int
    stem_out: int
    stages: tuple[StageSpec, StageSpec, StageSpec, StageSpec]


# Per stage: (downsample, light_block, kernel_size), the same in every variant.
_STAGE_KINDS = ((False, False, 3), (True, False, 3), (True, True, 5), (True, True, 5))


def _arch(stem: tuple[int, int, int], stages: tuple[tuple[int, int, int, int], ...], num_layers: int) -> HGNetv2Arch:
    """stem (in, mid, out); stages (in, mid, out, blocks); num_layers: inner convolutions per HG block."""
    specs = tuple(StageSpec(i, m, o, n, down, light, k, num_layers)
                  for (i, m, o, n), (down, light, k) in zip(stages, _STAGE_KINDS))
    return HGNetv2Arch(*stem, stages=specs)


# The B-series of D-FINE / DEIM / RT-DETRv4 (`arch_configs` of the official hgnetv2.py).
ARCHITECTURES: dict[str, HGNetv2Arch] = {
    "B0": _arch((3, 16, 16), ((16, 16, 64, 1), (64, 32, 256, 1), (256, 64, 512, 2), (512, 128, 1024, 1)), 3),
    "B1": _arch((3, 24, 32), ((32, 32, 64, 1), (64, 48, 256, 1), (256, 96, 512, 2), (512, 192, 1024, 1)), 3),
    "B2": _arch((3, 24, 32), ((32, 32, 96, 1), (96, 64, 384, 1), (384, 128, 768, 3), (768, 256, 1536, 1)), 4),
    "B3": _arch((3, 24, 32), ((32, 32, 128, 1), (128, 64, 512, 1), (512, 128, 1024, 3), (1024, 256, 2048, 1)), 5),
    "B4": _arch((3, 32, 48), ((48, 48, 128, 1), (128, 96, 512, 1), (512, 192, 1024, 3), (1024, 384, 2048, 1)), 6),
    "B5": _arch((3, 32, 64), ((64, 64, 128, 1), (128, 128, 512, 2), (512, 256, 1024, 5), (1024, 512, 2048, 2)), 6),
    "B6": _arch((3, 48, 96), ((96, 96, 192, 2), (192, 192, 512, 3), (512, 384, 1024, 6), (1024, 768, 2048, 3)), 6),
}
# RT-DETRv2's L / X / H are B4 / B5 / B6 (the same network; its checkpoints name two blocks
# differently, which `rtdetr.models.weights` maps).
ARCHITECTURES |= {"L": ARCHITECTURES["B4"], "X": ARCHITECTURES["B5"], "H": ARCHITECTURES["B6"]}

# Total stride of the output of each stage (the stem already divides by 4).
STAGE_STRIDES = (4, 8, 16, 32)


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


class LearnableAffine(nn.Module):
    """`scale * x + bias` with two scalar parameters (keys `scale`, `bias`, shape [1]; start 1 and 0):
    the "LAB" of the D-FINE backbones, after each activation."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + optional ReLU (+ `LearnableAffine` when `lab` and there
    is an activation); keys `conv.*`, `bn.*`, `lab.*`.

    [B, C_in, H, W] -> [B, C_out, H', W'] with H' = ceil(H / stride) for odd kernels.

    With `pad_bottom_right=True` the convolution itself is unpadded and a zero row and
    column are added at the bottom and right first (for the 2x2 stem convolutions, which
    then keep the spatial size); the conv then sits at `conv.1` (`conv.0` is the padding).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1, act: bool = True,
                 pad_bottom_right: bool = False, lab: bool = False):
        super().__init__()
        if pad_bottom_right:
            self.conv = nn.Sequential(
                nn.ZeroPad2d((0, 1, 0, 1)),  # (left, right, top, bottom)
                nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=False),
            )
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                  padding=(kernel_size - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        self.lab = LearnableAffine() if lab and act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        return x if self.lab is None else self.lab(x)

    def fuse(self) -> nn.Module:
        """The inference equivalent: the conv with the norm folded in (after its padding, if any),
        with the activation in a `ConvAct` unless there is none (`rtdetr.models.reparam.fuse_model`)."""
        if isinstance(self.conv, nn.Sequential):  # (ZeroPad2d, Conv2d)
            pad, conv = self.conv
            fused = conv_act(nn.Sequential(pad, fold_norm(conv, self.bn)), self.act)
        else:
            fused = conv_act(fold_norm(self.conv, self.bn), self.act)
        # The affine map follows the activation, so it cannot fold into the conv: it stays.
        return fused if self.lab is None else nn.Sequential(fused, self.lab)


class LightConvBNAct(nn.Module):
    """A cheap kxk convolution: 1x1 conv (no activation) then depthwise kxk conv + ReLU.

    Keys `conv1.*`, `conv2.*`. [B, C_in, H, W] -> [B, C_out, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, lab: bool = False):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, kernel_size=1, act=False)
        self.conv2 = ConvBNAct(out_channels, out_channels, kernel_size=kernel_size,
                               groups=out_channels, act=True, lab=lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class StemBlock(nn.Module):
    """The stem: reduces the resolution by 4.

    [B, C_in, H, W] -> [B, C_out, H/4, W/4] (H, W divisible by 4)

        stem1 (3x3, stride 2)              -> [B, mid, H/2, W/2]
        two branches on that:
          stem2a -> stem2b (2x2 convs)     -> [B, mid, H/2, W/2]
          2x2 max-pool, stride 1           -> [B, mid, H/2, W/2]
        concatenate (pool branch first)    -> [B, 2*mid, H/2, W/2]
        stem3 (3x3, stride 2)              -> [B, mid, H/4, W/4]
        stem4 (1x1)                        -> [B, C_out, H/4, W/4]

    The 2x2 convolutions and the pool pad one zero row/column at the bottom/right so the
    size is kept.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, lab: bool = False):
        super().__init__()
        self.stem1 = ConvBNAct(in_channels, mid_channels, kernel_size=3, stride=2, lab=lab)
        self.stem2a = ConvBNAct(mid_channels, mid_channels // 2, kernel_size=2, pad_bottom_right=True, lab=lab)
        self.stem2b = ConvBNAct(mid_channels // 2, mid_channels, kernel_size=2, pad_bottom_right=True, lab=lab)
        self.stem3 = ConvBNAct(mid_channels * 2, mid_channels, kernel_size=3, stride=2, lab=lab)
        self.stem4 = ConvBNAct(mid_channels, out_channels, kernel_size=1, lab=lab)
        self.pool = nn.Sequential(
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem1(x)
        conv_branch = self.stem2b(self.stem2a(x))
        pool_branch = self.pool(x)
        x = torch.cat([pool_branch, conv_branch], dim=1)
        return self.stem4(self.stem3(x))


class HGBlock(nn.Module):
    """One HG block: a chain of `num_layers` convolutions, all of whose outputs (and the
    input) are concatenated, then squeezed to out/2 channels and expanded to out channels.

    Keys `layers.{i}.*`, `aggregation_squeeze_conv.*`, `aggregation_excitation_conv.*`.

    [B, C_in, H, W] -> [B, C_out, H, W]; with `residual=True` (needs C_in == C_out)
    the input is added to the result.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int,
                 kernel_size: int, num_layers: int, light_block: bool, residual: bool, lab: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            layer_in = in_channels if i == 0 else mid_channels
            if light_block:
                layer = LightConvBNAct(layer_in, mid_channels, kernel_size, lab)
            else:
                layer = ConvBNAct(layer_in, mid_channels, kernel_size, lab=lab)
            self.layers.append(layer)

        total_channels = in_channels + num_layers * mid_channels
        self.aggregation_squeeze_conv = ConvBNAct(total_channels, out_channels // 2, kernel_size=1, lab=lab)
        self.aggregation_excitation_conv = ConvBNAct(out_channels // 2, out_channels, kernel_size=1, lab=lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        y = x
        for layer in self.layers:
            y = layer(y)
            features.append(y)
        y = torch.cat(features, dim=1)  # [B, C_in + num_layers * mid, H, W]
        y = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(y))
        return y + x if self.residual else y


class HGStage(nn.Module):
    """An optional stride-2 depthwise downsampling conv followed by `num_blocks` HG blocks.

    Keys `downsample.*` (only when downsampling) and `blocks.{i}.*`.

    [B, C_in, H, W] -> [B, C_out, H/2, W/2] (downsample) or [B, C_out, H, W].
    Every block after the first is residual.
    """

    def __init__(self, spec: StageSpec, lab: bool = False):
        super().__init__()
        if spec.downsample:
            self.downsample = ConvBNAct(spec.in_channels, spec.in_channels, kernel_size=3, stride=2,
                                        groups=spec.in_channels, act=False)
        else:
            self.downsample = nn.Identity()

        self.blocks = nn.Sequential(*[
            HGBlock(
                in_channels=spec.in_channels if i == 0 else spec.out_channels,
                mid_channels=spec.mid_channels,
                out_channels=spec.out_channels,
                kernel_size=spec.kernel_size,
                num_layers=spec.num_layers,
                light_block=spec.light_block,
                residual=i > 0,
                lab=lab,
            )
            for i in range(spec.num_blocks)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# --------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------


class HGNetv2(nn.Module):
    """HGNetv2 backbone.

    Args:
        name: variant, "B0" ... "B6" (D-FINE / DEIM / RT-DETRv4), or "L", "X", "H" (RT-DETRv2: B4, B5, B6).
        return_idx: indices (0..3) of the stages whose outputs `forward` returns.
        freeze_at: -1 freezes nothing; n >= 0 stops gradients of the stem and of the
            first n stages.
        freeze_norm: replace every BatchNorm2d by a FrozenBatchNorm2d (fixed statistics
            and affine parameters; no `num_batches_tracked` in the state dict).
        use_lab: a `LearnableAffine` after every activation (the D-FINE B0-B3 configs).

    Attributes:
        out_channels: channels of each returned feature map.
        out_strides: stride (relative to the input) of each returned feature map.

    forward: [B, 3, H, W] -> list of [B, out_channels[i], H / out_strides[i], W / out_strides[i]]
    (H, W divisible by 32). For the default return_idx the channels are
    [512, 1024, 2048] and the strides [8, 16, 32] for every variant.
    """

    def __init__(self, name: str = "L", return_idx: tuple[int, ...] = (1, 2, 3),
                 freeze_at: int = 0, freeze_norm: bool = True, use_lab: bool = False):
        super().__init__()
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown HGNetv2 variant {name!r}; expected one of {sorted(ARCHITECTURES)}")
        arch = ARCHITECTURES[name]
        self.name = name
        self.return_idx = tuple(return_idx)
        if not all(0 <= i < len(arch.stages) for i in self.return_idx):
            raise ValueError(f"return_idx {self.return_idx} out of range 0..{len(arch.stages) - 1}")
        self.out_channels = [arch.stages[i].out_channels for i in self.return_idx]
        self.out_strides = [STAGE_STRIDES[i] for i in self.return_idx]

        self.stem = StemBlock(arch.stem_in, arch.stem_mid, arch.stem_out, use_lab)
        self.stages = nn.ModuleList(HGStage(spec, use_lab) for spec in arch.stages)

        self._init_weights()

        apply_freezing(self, self.stem, self.stages, freeze_at, freeze_norm)

    def _init_weights(self) -> None:
        """Kaiming-normal convolutions, identity batch norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> feature maps of the stages in `return_idx`."""
        x = self.stem(x)
        outputs = []
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx in self.return_idx:
                outputs.append(x)
        return outputs
