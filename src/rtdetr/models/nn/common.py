"""Small building blocks shared by the backbones, the encoder and the decoder."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from rtdetr.models.reparam import conv_act, fold_norm


def get_activation(name: str | None) -> nn.Module:
    """An activation module by its config name (`relu`, `silu`, `gelu`, or None for identity)."""
    if name is None:
        return nn.Identity()
    table = {"relu": lambda: nn.ReLU(inplace=True), "silu": lambda: nn.SiLU(inplace=True), "gelu": nn.GELU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    # In place: the activation's input is a fresh sum or norm output nobody else reads (saves memory).
    return table[name]()


class ConvNormLayer(nn.Module):
    """Conv2d (no bias by default; `groups` as Conv2d's) + BatchNorm2d + activation; keys `conv.*`, `norm.*`."""

    def __init__(self, ch_in: int, ch_out: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, bias: bool = False, act: str | None = None, groups: int = 1):
        super().__init__()
        padding = (kernel_size - 1) // 2 if padding is None else padding
        self.conv = nn.Conv2d(ch_in, ch_out, kernel_size, stride, padding=padding, bias=bias, groups=groups)
        self.norm = nn.BatchNorm2d(ch_out)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    def fuse(self) -> nn.Module:
        """The inference equivalent: one conv with bias (norm folded), wrapped with the activation
        in a `ConvAct` unless there is none (`rtdetr.models.reparam.fuse_model` calls this)."""
        return conv_act(fold_norm(self.conv, self.norm), self.act)


class ConvNorm(nn.Sequential):
    """1x1 Conv2d (no bias) + BatchNorm2d, no activation: the encoder's and decoder's input
    projections. [B, C_in, H, W] -> [B, C_out, H, W]; keys `conv.*`, `norm.*`."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__(OrderedDict([
            ("conv", nn.Conv2d(ch_in, ch_out, kernel_size=1, bias=False)),
            ("norm", nn.BatchNorm2d(ch_out)),
        ]))

    def fuse(self) -> nn.Conv2d:
        """One conv with bias, the norm folded in."""
        return fold_norm(self.conv, self.norm)


class MLP(nn.Module):
    """`num_layers` Linear layers with `act` between them; keys `layers.{i}.*`."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, act: str = "relu"):
        super().__init__()
        dims_in = [in_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below `module` by a FrozenBatchNorm2d holding the same statistics.

    Official backbones with `freeze_norm: True` do this before their weights load, so their
    checkpoints carry no `num_batches_tracked` for those layers.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batch_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze_parameters(module: nn.Module) -> None:
    """Stop gradients for every parameter of `module` (official `freeze_at`)."""
    for p in module.parameters():
        p.requires_grad_(False)


def apply_freezing(backbone: nn.Module, stem: nn.Module, stages, freeze_at: int, freeze_norm: bool) -> None:
    """The official backbones' `freeze_at` / `freeze_norm`: freeze_at >= 0 stops gradients of the
    stem and the first `freeze_at` stages; freeze_norm makes every batch norm a FrozenBatchNorm2d."""
    if freeze_at >= 0:
        freeze_parameters(stem)
        for stage in stages[:freeze_at]:
            freeze_parameters(stage)
    if freeze_norm:
        freeze_batch_norm(backbone)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x), with x clipped to [eps, 1 - eps]."""
    x = x.clip(min=0.0, max=1.0)
    return torch.log(x.clip(min=eps) / (1 - x).clip(min=eps))


def prior_logit(prob: float = 0.01) -> float:
    """The bias that makes a sigmoid classifier start at `prob`."""
    return -math.log((1 - prob) / prob)
