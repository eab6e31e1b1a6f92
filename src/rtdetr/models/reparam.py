"""Folding batch norms into convolutions, and RepVGG branches into one convolution.

At inference a batch norm is a fixed per-channel affine map, `y = x * scale + shift` with
`scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`. Applied after a
convolution it can be folded into that convolution's weight and bias:

    W' = W * scale[:, None, None, None]        b' = (b - mean) * scale + beta

A RepVGG block `act(BN(conv3x3(x)) + BN(conv1x1(x)))` is, after folding each branch, a sum
of two convolutions with the same input, stride and output grid; the 1x1 kernel padded by
one zero on each side is a 3x3 kernel, so the sum is one 3x3 convolution.

`fold_conv_norms(module)` rewrites every such pattern of the backbones, the hybrid encoder
and the decoder's input projections in place, and fails loudly if any norm is left over
(a new block type would otherwise silently keep running its batch norm).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from rtdetr.models.nn.common import ConvNormLayer
from rtdetr.models.nn.hgnetv2 import ConvBNAct
from rtdetr.models.nn.hybrid_encoder import RepVggBlock

BatchNorms = (nn.BatchNorm2d, FrozenBatchNorm2d)


class ConvAct(nn.Module):
    """`act(conv(x))`: what a conv + norm + activation block becomes once its norm is folded.

    `conv` is an `nn.Conv2d` with bias, or a `Sequential(ZeroPad2d, Conv2d)` (HGNetv2 stem).
    """

    def __init__(self, conv: nn.Module, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def fold_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """A new Conv2d (with bias) equal to `norm(conv(x))` in eval mode.

    `norm`: BatchNorm2d (running statistics) or torchvision's FrozenBatchNorm2d.
    The products are computed in float64 and rounded once, to the conv's dtype.
    """
    if not isinstance(norm, BatchNorms):
        raise TypeError(f"cannot fold {type(norm).__name__} into a convolution")
    w = conv.weight.detach().double()                      # [C_out, C_in / groups, kh, kw]
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                              device=w.device)
    gamma, beta = norm.weight.detach().double(), norm.bias.detach().double()
    mean, var = norm.running_mean.double(), norm.running_var.double()
    scale = gamma / torch.sqrt(var + norm.eps)             # [C_out]

    # Built on the meta device: no random initialisation of weights that are replaced at once.
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode, device="meta")
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter((w * scale[:, None, None, None]).to(dtype), requires_grad=False)
    fused.bias = nn.Parameter(((b - mean) * scale + beta).to(dtype), requires_grad=False)
    return fused


def fuse_repvgg(block: RepVggBlock) -> ConvAct:
    """One 3x3 conv + activation equal to the two-branch RepVGG block."""
    k3 = fold_norm(block.conv1.conv, block.conv1.norm)     # 3x3, padding 1
    k1 = fold_norm(block.conv2.conv, block.conv2.norm)     # 1x1, padding 0
    if k3.kernel_size != (3, 3) or k1.kernel_size != (1, 1) or k3.stride != k1.stride:
        raise ValueError("RepVGG fusion expects a 3x3 and a 1x1 branch with the same stride")
    with torch.no_grad():
        # The 1x1 kernel sits at the centre of a zero 3x3 kernel; with padding 1 vs 0 both
        # branches then read the same input pixel for every output pixel.
        k3.weight.add_(F.pad(k1.weight, [1, 1, 1, 1]))
        k3.bias.add_(k1.bias)
    return ConvAct(k3, block.act)


def _fold_block(module: nn.Module) -> nn.Module | None:
    """The folded replacement of one known conv + norm block, or None if `module` is none of them."""
    if isinstance(module, RepVggBlock):
        return fuse_repvgg(module)
    if isinstance(module, ConvNormLayer):                  # conv, norm, act
        return _conv_act(fold_norm(module.conv, module.norm), module.act)
    if isinstance(module, ConvBNAct):                      # HGNetv2: conv (maybe after a pad), bn, act
        if isinstance(module.conv, nn.Sequential):         # (ZeroPad2d, Conv2d)
            pad, conv = module.conv
            return _conv_act(nn.Sequential(pad, fold_norm(conv, module.bn)), module.act)
        return _conv_act(fold_norm(module.conv, module.bn), module.act)
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential) and list(children) == ["conv", "norm"]:  # input projections
        return fold_norm(children["conv"], children["norm"])
    return None


def _conv_act(conv: nn.Module, act: nn.Module) -> nn.Module:
    """Skip the wrapper (one Python call less) when there is no activation."""
    return conv if isinstance(act, nn.Identity) else ConvAct(conv, act)


def fold_conv_norms(module: nn.Module) -> nn.Module:
    """Fold every conv + norm block and RepVGG block below `module`, in place; returns `module`.

    Raises if a BatchNorm2d / FrozenBatchNorm2d remains afterwards (an unknown block type).
    """
    _fold_children(module)
    left = [name for name, m in module.named_modules() if isinstance(m, BatchNorms)]
    if left:
        raise RuntimeError(f"batch norms left unfolded (unknown block type): {', '.join(left[:5])}")
    return module


def _fold_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        folded = _fold_block(child)
        if folded is None:
            _fold_children(child)
        else:
            setattr(module, name, folded)
