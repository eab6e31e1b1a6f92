"""Re-parameterisation for inference: the folding math, and `fuse_model`, which walks a model
and lets every foldable block replace itself by its `fuse()` (as timm's `reparameterize_model`).

At inference a batch norm is a fixed per-channel affine map, `y = x * scale + shift` with
`scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`. Applied after a
convolution it can be folded into that convolution's weight and bias:

    W' = W * scale[:, None, None, None]        b' = (b - mean) * scale + beta

A RepVGG block `act(BN(conv3x3(x)) + BN(conv1x1(x)))` is, after folding each branch, a sum
of two convolutions with the same input, stride and output grid; the 1x1 kernel padded by
one zero on each side is a 3x3 kernel, so the sum is one 3x3 convolution.

The blocks themselves (`ConvNormLayer`, `ConvNorm`, `RepVggBlock`, HGNetv2's `ConvBNAct`) know
how to fuse; this module holds only what they share, so it imports none of them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

BatchNorms = (nn.BatchNorm2d, FrozenBatchNorm2d)


class ConvAct(nn.Module):
    """`act(conv(x))`: what a conv + norm + activation block becomes once its norm is folded.

    `conv` is an `nn.Conv2d` with bias, or a `Sequential(ZeroPad2d, Conv2d)` (HGNetv2 stem).
    x [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    def __init__(self, conv: nn.Module, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def conv_act(conv: nn.Module, act: nn.Module) -> nn.Module:
    """`ConvAct(conv, act)`, or `conv` itself when there is no activation (one Python call less)."""
    return conv if isinstance(act, nn.Identity) else ConvAct(conv, act)


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
    return _conv_like(conv, (w * scale[:, None, None, None]).to(conv.weight.dtype),
                      ((b - mean) * scale + beta).to(conv.weight.dtype))


def merge_parallel_convs(k3: nn.Conv2d, k1: nn.Conv2d) -> nn.Conv2d:
    """One 3x3 conv equal to `k3(x) + k1(x)`: a 3x3 (padding 1) and a 1x1 (padding 0) conv with
    biases, the same stride and groups (a RepVGG block's two folded branches)."""
    if (k3.kernel_size, k3.padding, k1.kernel_size, k1.padding) != ((3, 3), (1, 1), (1, 1), (0, 0)) \
            or k3.stride != k1.stride or k3.groups != k1.groups or k3.bias is None or k1.bias is None:
        raise ValueError("RepVGG fusion expects a 3x3 and a 1x1 branch with the same stride, both with biases")
    # The 1x1 kernel sits at the centre of a zero 3x3 kernel; with padding 1 vs 0 both
    # branches then read the same input pixel for every output pixel.
    weight = k3.weight.detach() + F.pad(k1.weight.detach(), [1, 1, 1, 1])
    return _conv_like(k3, weight, k3.bias.detach() + k1.bias.detach())


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A Conv2d with `conv`'s geometry and the given weight [C_out, C_in / groups, kh, kw] and bias [C_out]."""
    # Built on the meta device: no random initialisation of weights that are replaced at once.
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode, device="meta")
    out.weight = nn.Parameter(weight, requires_grad=False)
    out.bias = nn.Parameter(bias, requires_grad=False)
    return out


def fuse_model(model: nn.Module) -> nn.Module:
    """Replace, in place and bottom-up, every submodule that has a `fuse()` by what it returns;
    returns `model` (or its own `fuse()` if it has one).

    Bottom-up, so a block's `fuse()` sees its children already fused (a RepVGG block gets its two
    folded branches). For inference only: norms fold with their running statistics. Raises if a
    BatchNorm2d / FrozenBatchNorm2d remains afterwards: a block type without `fuse()` would
    otherwise silently keep running its norm.
    """
    _fuse_children(model)
    if _can_fuse(model):
        model = model.fuse()
    left = [name or type(model).__name__ for name, m in model.named_modules() if isinstance(m, BatchNorms)]
    if left:
        raise RuntimeError(f"batch norms left unfolded (a block without fuse()): {', '.join(left[:5])}")
    return model


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        _fuse_children(child)
        if _can_fuse(child):
            setattr(module, name, child.fuse())


def _can_fuse(module: nn.Module) -> bool:
    """Whether the module's class defines a `fuse()` method (looked up on the class: a submodule
    named `fuse`, e.g. the mask head's `PixelDecoder.fuse` conv, is not one)."""
    return callable(getattr(type(module), "fuse", None))
