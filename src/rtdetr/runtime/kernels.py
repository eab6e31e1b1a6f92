"""Faster inference stand-ins for `nn.Linear`, conv + activation and `nn.MultiheadAttention` (same math).

Why: PyTorch's CPU `nn.Linear` runs on MKL's sgemm, which on AMD processors takes a generic
code path; oneDNN (the library behind PyTorch's CPU convolutions) reaches about twice its
speed on the decoder's large matrix products (e.g. `value_proj`, [8400, 256] x [256, 256]:
3.4 vs 6.3 ms on 2 cores of an AVX-512 EPYC). `OneDNNLinear` calls oneDNN through
`torch.ops.mkldnn._linear_pointwise`, the op torch.compile itself emits for CPU linears; it
is used only where that op exists and the dtype suits it, else `nn.Linear` stays.

`OneDNNConv` does the same for convolutions (`torch.ops.mkldnn._convolution_pointwise`): the
activation runs inside the convolution (no second pass over the output), and the weight is
re-laid out once into oneDNN's blocked format instead of on every call (`nn.Conv2d` passes
plain weights, which oneDNN reorders each time): a further 4-8% off the whole r18 model.

`SelfAttention` replaces `nn.MultiheadAttention` for the layers' `q = k = x + pos, v = x`
attention, which cannot take PyTorch's MHA fast path (it needs query, key and value to be the
same tensor): one projection for q and k together, one for v, then
`F.scaled_dot_product_attention`, so that its projections can be oneDNN linears too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.models.reparam import ConvAct

ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
MIN_OUT_FEATURES = 32  # below this (box heads' 4 outputs) oneDNN's call overhead outweighs its speed


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and all(
        hasattr(torch.ops.mkldnn, op) for op in ("_linear_pointwise", "_convolution_pointwise",
                                                 "_reorder_convolution_weight"))


def _onednn_ok(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dtype in ONEDNN_DTYPES


class OneDNNLinear(nn.Module):
    """`x @ weight.T + bias` through oneDNN; x [..., in_features] -> [..., out_features]. CPU only."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight                        # [out, in]
        self.bias = linear.bias                            # [out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def use_onednn_linears(module: nn.Module) -> nn.Module:
    """Replace, in place, every `nn.Linear` below `module` with at least MIN_OUT_FEATURES outputs
    by a `OneDNNLinear` (when the op is available and the weights are CPU float32 / bfloat16)."""
    if not onednn_available():
        return module
    for name, child in module.named_children():
        if type(child) is nn.Linear and child.out_features >= MIN_OUT_FEATURES and _onednn_ok(child.weight):
            setattr(module, name, OneDNNLinear(child))
        else:
            use_onednn_linears(child)
    return module


class OneDNNConv(nn.Module):
    """`act(conv(x))` as one oneDNN call; x [B, C_in, H, W] -> [B, C_out, H', W']. CPU only.

    The weight is packed into oneDNN's layout at the first call (for that input size; other
    batch sizes work too) and kept outside the state dict: the packed tensor has no storage,
    so it is dropped when the module is copied or pickled and packed again on the next call.
    """

    ACTIVATIONS = {nn.ReLU: "relu", nn.SiLU: "swish", nn.Identity: "none"}

    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias   # [C_out, C_in / groups, kh, kw], [C_out]
        self.conv_args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.attr = self.ACTIVATIONS[type(act)]
        self._packed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            padding, stride, dilation, groups = self.conv_args
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.detach(), padding, stride, dilation, groups, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed, self.bias, *self.conv_args, self.attr, [], "")

    def _apply(self, fn, recurse=True):  # .to(...) etc.: repack from the converted weight
        self._packed = None
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__().copy()
        state["_packed"] = None
        return state

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1] * self.conv_args[3]}, {self.weight.shape[0]}, " \
               f"kernel_size={tuple(self.weight.shape[2:])}, stride={tuple(self.conv_args[1])}, act={self.attr}"


def use_onednn_convs(module: nn.Module) -> nn.Module:
    """Replace, in place, every `ConvAct(Conv2d, ReLU / SiLU / Identity)` and bare `nn.Conv2d`
    below `module` by a `OneDNNConv` (when the ops are available and the weights CPU float32 / bfloat16)."""
    if not onednn_available():
        return module
    for name, child in module.named_children():
        if (isinstance(child, ConvAct) and type(child.conv) is nn.Conv2d
                and type(child.act) in OneDNNConv.ACTIVATIONS and _convertible(child.conv)):
            setattr(module, name, OneDNNConv(child.conv, child.act))
        elif type(child) is nn.Conv2d and _convertible(child):
            setattr(module, name, OneDNNConv(child, nn.Identity()))
        else:
            use_onednn_convs(child)
    return module


def _convertible(conv: nn.Conv2d) -> bool:
    return conv.padding_mode == "zeros" and isinstance(conv.padding, tuple) and _onednn_ok(conv.weight)


class SelfAttention(nn.Module):
    """Drop-in for a batch-first `nn.MultiheadAttention` at inference (no dropout, no extra k/v biases).

    Called as the layers call MHA: `attn(q, k, value=v, attn_mask=None, need_weights=False)`
    with q, k, v [B, L, C] -> (out [B, L, C], None). When `q is k` (always, in RT-DETR) the two
    projections run as one [C, 2C] product.
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha.batch_first or mha.bias_k is not None or not mha._qkv_same_embed_dim:
            raise ValueError("SelfAttention supports batch-first MHA with packed projections only")
        c = mha.embed_dim
        self.num_heads = mha.num_heads
        w, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
        self.qk_proj = _linear(w[:2 * c], b[:2 * c])
        self.v_proj = _linear(w[2 * c:], b[2 * c:])
        self.out_proj = _linear(mha.out_proj.weight.detach(), mha.out_proj.bias.detach())

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: torch.Tensor | None = None, need_weights: bool = False):
        if need_weights:
            raise ValueError("SelfAttention does not return attention weights")
        if query is key:
            q, k = self.qk_proj(query).chunk(2, dim=-1)
        else:
            c = query.shape[-1]
            w, b = self.qk_proj.weight, self.qk_proj.bias
            q, k = F.linear(query, w[:c], b[:c]), F.linear(key, w[c:], b[c:])
        v = self.v_proj(value)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # MHA: True = masked out; SDPA: True = may attend
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), attn_mask=attn_mask)
        b_, h, l, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b_, l, h * d)), None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, L, C] -> [B, heads, L, C / heads]."""
        b, l, c = t.shape
        return t.view(b, l, self.num_heads, c // self.num_heads).transpose(1, 2)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], device="meta")
    lin.weight = nn.Parameter(weight.clone(), requires_grad=False)
    lin.bias = nn.Parameter(bias.clone(), requires_grad=False)
    return lin


def use_self_attention(module: nn.Module) -> nn.Module:
    """Replace, in place, every `nn.MultiheadAttention` below `module` by a `SelfAttention`."""
    for name, child in module.named_children():
        if isinstance(child, nn.MultiheadAttention):
            setattr(module, name, SelfAttention(child))
        else:
            use_self_attention(child)
    return module
