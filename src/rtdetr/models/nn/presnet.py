"""PResNet: ResNet-vd backbones (depth 18, 34, 50, 101) with the official key layout.

Variant 'd': a three-conv stem, and stride-2 projection shortcuts that average-pool
before their 1x1 convolution. Outputs the stride 8, 16 and 32 maps.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.models.nn.common import ConvNormLayer, apply_freezing

BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
STAGE_WIDTHS = [64, 128, 256, 512]
STAGE_STRIDES = [4, 8, 16, 32]


def projection_shortcut(ch_in: int, ch_out: int, stride: int) -> nn.Module:
    """The first block's shortcut: avg-pool + 1x1 conv when downsampling ('vd'), else a 1x1 conv."""
    if stride == 2:
        return nn.Sequential(OrderedDict([
            ("pool", nn.AvgPool2d(2, 2, 0, ceil_mode=True)),
            ("conv", ConvNormLayer(ch_in, ch_out, 1, 1)),
        ]))
    return ConvNormLayer(ch_in, ch_out, 1, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, ch_in: int, width: int, stride: int, project: bool):
        super().__init__()
        if project:
            self.short = projection_shortcut(ch_in, width, stride)
        self.branch2a = ConvNormLayer(ch_in, width, 3, stride, act="relu")
        self.branch2b = ConvNormLayer(width, width, 3, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2b(self.branch2a(x))
        short = self.short(x) if hasattr(self, "short") else x
        return self.act(out + short)


class BottleNeck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 with 4x expansion (ResNet-50/101)."""

    expansion = 4

    def __init__(self, ch_in: int, width: int, stride: int, project: bool):
        super().__init__()
        ch_out = width * self.expansion
        self.branch2a = ConvNormLayer(ch_in, width, 1, 1, act="relu")
        self.branch2b = ConvNormLayer(width, width, 3, stride, act="relu")
        self.branch2c = ConvNormLayer(width, ch_out, 1, 1)
        if project:
            self.short = projection_shortcut(ch_in, ch_out, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        short = self.short(x) if hasattr(self, "short") else x
        return self.act(out + short)


class Stage(nn.Module):
    """`count` blocks; the first one projects (and downsamples except in the first stage)."""

    def __init__(self, block: type, ch_in: int, width: int, count: int, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            stride = 2 if (i == 0 and downsample) else 1
            self.blocks.append(block(ch_in, width, stride, project=(i == 0)))
            ch_in = width * block.expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PResNet(nn.Module):
    """ResNet-vd. `forward(x [B, 3, H, W]) -> [C3 [B, c, H/8, W/8], C4 [.., H/16, W/16], C5 [.., H/32, W/32]]`."""

    def __init__(self, depth: int = 18, return_idx: tuple[int, ...] = (1, 2, 3),
                 freeze_at: int = -1, freeze_norm: bool = False):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"PResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        block = BottleNeck if depth >= 50 else BasicBlock
        self.conv1 = nn.Sequential(OrderedDict([
            ("conv1_1", ConvNormLayer(3, 32, 3, 2, act="relu")),
            ("conv1_2", ConvNormLayer(32, 32, 3, 1, act="relu")),
            ("conv1_3", ConvNormLayer(32, 64, 3, 1, act="relu")),
        ]))
        self.res_layers = nn.ModuleList()
        ch_in = 64
        for i, (width, count) in enumerate(zip(STAGE_WIDTHS, BLOCKS_PER_STAGE[depth])):
            self.res_layers.append(Stage(block, ch_in, width, count, downsample=(i > 0)))
            ch_in = width * block.expansion

        self.return_idx = list(return_idx)
        self.out_channels = [STAGE_WIDTHS[i] * block.expansion for i in self.return_idx]
        self.out_strides = [STAGE_STRIDES[i] for i in self.return_idx]

        apply_freezing(self, self.conv1, self.res_layers, freeze_at, freeze_norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs
