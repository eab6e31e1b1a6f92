"""The hybrid encoder's cross-scale fusion (CCFF) blocks and downsampling.

RT-DETR fuses with `CSPRepLayer` and downsamples with a 3x3 stride-2 conv; D-FINE (and DEIM,
RT-DETRv4) fuse with `RepNCSPELAN4` and downsample with `SCDown`. Every block maps
[B, C_in, H, W] to [B, C_out, H', W'] and folds for inference through the `fuse()` of its parts.
"""
from __future__ import annotations

import torch
from torch import nn

from rtdetr.models.nn.common import ConvNormLayer, get_activation
from rtdetr.models.reparam import ConvAct, merge_parallel_convs


class RepVggBlock(nn.Module):
    """`act(BN(conv3x3(x)) + BN(conv1x1(x)))`: two branches at training time, one 3x3 conv when fused."""

    def __init__(self, ch_in: int, ch_out: int, act: str = "silu"):
        super().__init__()
        self.conv1 = ConvNormLayer(ch_in, ch_out, 3, 1, padding=1)
        self.conv2 = ConvNormLayer(ch_in, ch_out, 1, 1, padding=0)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1(x) + self.conv2(x))

    def fuse(self) -> ConvAct:
        """One 3x3 conv + the activation, equal to the two branches in eval mode. The branches
        may already be fused (`fuse_model` works bottom-up) or not (a block fused on its own)."""
        k3, k1 = (b.fuse() if isinstance(b, ConvNormLayer) else b for b in (self.conv1, self.conv2))
        return ConvAct(merge_parallel_convs(k3, k1), self.act)


class CSPRepLayer(nn.Module):
    """CSP block: `conv3(bottlenecks(conv1(x)) + conv2(x))` with RepVGG bottlenecks;
    conv3 is the identity when the hidden width (`ch_out * expansion`) is `ch_out`."""

    def __init__(self, ch_in: int, ch_out: int, num_blocks: int = 3, expansion: float = 1.0, act: str = "silu"):
        super().__init__()
        hidden = int(ch_out * expansion)
        self.conv1 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.conv2 = ConvNormLayer(ch_in, hidden, 1, 1, act=act)
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, hidden, act=act) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, ch_out, 1, 1, act=act) if hidden != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class RepNCSPELAN4(nn.Module):
    """D-FINE's fusion block (CSP-ELAN), ch_in -> ch_out with `c3` split channels and `c4` branch width.

    `cv1` (1x1) makes c3 channels, split in halves y0, y1; `cv2` = CSP block (c3/2 -> c4) + 3x3
    conv gives y2 from y1, `cv3` (same, c4 -> c4) gives y3 from y2; `cv4` (1x1) maps
    cat[y0, y1, y2, y3] (c3 + 2 * c4 channels) to ch_out. Keys `cv1`, `cv2.0.*`, `cv2.1`, `cv3.*`, `cv4`.
    """

    def __init__(self, ch_in: int, ch_out: int, c3: int, c4: int, num_blocks: int = 3, act: str = "silu"):
        super().__init__()
        self.split = c3 // 2
        self.cv1 = ConvNormLayer(ch_in, c3, 1, 1, act=act)
        self.cv2 = nn.Sequential(CSPRepLayer(c3 // 2, c4, num_blocks, 1.0, act), ConvNormLayer(c4, c4, 3, 1, act=act))
        self.cv3 = nn.Sequential(CSPRepLayer(c4, c4, num_blocks, 1.0, act), ConvNormLayer(c4, c4, 3, 1, act=act))
        self.cv4 = ConvNormLayer(c3 + 2 * c4, ch_out, 1, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1 = self.cv1(x).split((self.split, self.split), dim=1)
        y2 = self.cv2(y1)
        y3 = self.cv3(y2)
        return self.cv4(torch.cat([y0, y1, y2, y3], dim=1))


class SCDown(nn.Sequential):
    """Spatial-channel downsampling (D-FINE): 1x1 conv + norm, then a depthwise 3x3 stride-2
    conv + norm, no activation. [B, C_in, H, W] -> [B, C_out, H/2, W/2]; keys `cv1.*`, `cv2.*`."""

    def __init__(self, ch_in: int, ch_out: int, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.cv1 = ConvNormLayer(ch_in, ch_out, 1, 1)
        self.cv2 = ConvNormLayer(ch_out, ch_out, kernel_size, stride, groups=ch_out)


def fusion_block(kind: str, hidden_dim: int, num_blocks: int, expansion: float, act: str) -> nn.Module:
    """The CCFF block (2 * hidden_dim -> hidden_dim) of `EncoderConfig.fusion_block`."""
    if kind == "csp":
        return CSPRepLayer(2 * hidden_dim, hidden_dim, num_blocks, expansion, act)
    if kind == "elan":
        return RepNCSPELAN4(2 * hidden_dim, hidden_dim, 2 * hidden_dim, round(expansion * hidden_dim // 2),
                            num_blocks, act)
    raise ValueError(f"unknown fusion block {kind!r}; expected 'csp' or 'elan'")


def downsample_block(kind: str, hidden_dim: int, act: str) -> nn.Module:
    """The bottom-up stride-2 block of `EncoderConfig.downsample`. SCDown sits in a one-element
    Sequential, whose index is part of the official key names (`downsample_convs.k.0.cv1`)."""
    if kind == "conv":
        return ConvNormLayer(hidden_dim, hidden_dim, 3, 2, act=act)
    if kind == "scdown":
        return nn.Sequential(SCDown(hidden_dim, hidden_dim, 3, 2))
    raise ValueError(f"unknown downsampling {kind!r}; expected 'conv' or 'scdown'")
