"""`optimize_for_inference`: a fixed-size, inference-only copy of a detector for the fast eager path.

    fast = optimize_for_inference(model, imgsz=(640, 640))
    out = fast(x)                    # x [B, 3, 640, 640] -> {'pred_logits', 'pred_boxes'}, as model(x) in eval mode
                                     # (+ 'mask_features', 'mask_queries' with a mask head)

The copy runs the model's own modules and their one forward; making it changes only what those
modules hold, each step exact (same outputs within float rounding, < 1e-4):
- `fuse_model` (models/reparam.py): every conv + batch norm (plain or frozen) becomes one conv
  with bias, and every RepVGG block one 3x3 conv, through each block's `fuse()`: the norms are
  fixed affine maps at inference (the mask head's pixel decoder too);
- `decoder.keep_layers`: only the layers up to the chosen exit and their heads stay; the
  denoising embedding (training only) goes;
- `fix_size`: the AIFI position embedding, the anchors and the valid mask become buffers
  computed once for the input size (no per-call cache look-ups);
- attention runs through `F.scaled_dot_product_attention` with q and k projected together;
  on CPU, linear layers and convolutions (with their activations) call oneDNN directly and
  conv activations stay channels-last (`kernels.py`; measured in benchmarks/fused.py);
- every parameter stops requiring gradients, and the copy refuses `.train()`.
(The encoder's box head runs on the selected top-k queries only, in the model as in the copy:
see `RTDETRDecoder.select_queries`.)

The copy accepts only the size it was made for (any batch size): another size raises a
one-line error that says how to make a copy for it. `model` itself still takes any multiple of 32.
"""
from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from rtdetr.models.nn.detector import RTDETR, module_of
from rtdetr.models.reparam import fuse_model
from rtdetr.runtime.precision import refuse_if, torch_bf16_problem
from rtdetr.runtime.kernels import use_onednn_convs, use_onednn_linears, use_self_attention
from rtdetr.core.sizes import check_imgsz


def optimize_for_inference(model: RTDETR, imgsz: int | tuple[int, int] = (640, 640),
                           decoder_layers: int | None = None, dtype: torch.dtype = torch.float32, *,
                           channels_last: bool | None = None, onednn: bool | None = None) -> "OptimizedRTDETR":
    """An inference-only copy of `model` for inputs of `imgsz` = (height, width) (an int: square).

    decoder_layers: decoder layers to keep (default: the model's own eval setting, e.g. 3 of 6
                    for the *_r50vd_m models); the rest are dropped.
    dtype:          dtype of the backbone and the encoder (the convolutions: most of the time);
                    the decoder always runs in float32 and the outputs are float32. float32 is
                    exact (< 1e-4 from the model); bfloat16 trades accuracy for speed on CPUs with
                    native bf16 (AVX512-BF16 / AMX / ARM BF16; elsewhere `UnsupportedOnThisCPU`,
                    see `precision.py`), float16 on GPUs.
    channels_last:  keep conv activations NHWC (default: on CPU, where oneDNN convolutions are
                    ~25% faster that way; see benchmarks/fused.py).
    onednn:         call oneDNN directly (default: on CPU when available): linear layers at about
                    twice MKL's speed on AMD, convolutions with their activation fused and their
                    weights packed once (`kernels.py`). Turn it off to trace or export the copy
                    (the ops are PyTorch-internal).
    The original `model` is left untouched (deep copy), on its device.
    """
    model = module_of(model)
    if not isinstance(model, RTDETR):
        raise TypeError(f"optimize_for_inference expects an RTDETR model, got {type(model).__name__}")
    h, w = check_imgsz(imgsz)
    run = model.decoder.eval_layers if decoder_layers is None else decoder_layers
    if not 1 <= run <= model.decoder.num_layers:
        raise ValueError(f"decoder_layers must be in 1..{model.decoder.num_layers}, got {run}")
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and dtype == torch.bfloat16:
        refuse_if(torch_bf16_problem())
    channels_last = on_cpu if channels_last is None else channels_last
    onednn = on_cpu if onednn is None else onednn

    src = fuse_model(copy.deepcopy(model).eval())
    src.decoder.keep_layers(run)
    src.fix_size((h, w))
    src.encoder.channels_last = channels_last
    use_self_attention(src)
    # Reduced precision only for the convolutional trunk (most of the time): query selection
    # and the decoder's sampling locations need float32 (bfloat16 locations are off by up to
    # a third of a cell on an 80-cell map). A mask head's pixel decoder is convolutional too
    # (its features come out float32); its query embedding stays with the decoder, float32.
    src.backbone.to(dtype=dtype)
    src.encoder.to(dtype=dtype)
    if src.mask_head is not None:
        src.mask_head.pixel_decoder.to(dtype=dtype)
    if channels_last:
        src = src.to(memory_format=torch.channels_last)  # conv weights; the input is converted per call
    if onednn:  # after the dtype cast: these check the weights' dtype
        use_onednn_linears(src)
        use_onednn_convs(src)
    src.requires_grad_(False)
    return OptimizedRTDETR(src, (h, w), dtype, channels_last).eval()


# model -> (key, copy): the predictor's copies, one per model, dropped with the model.
_COPIES: "weakref.WeakKeyDictionary[RTDETR, tuple[tuple, OptimizedRTDETR]]" = weakref.WeakKeyDictionary()


def inference_copy(model: RTDETR, imgsz: tuple[int, int], decoder_layers: int | None = None) -> "OptimizedRTDETR":
    """`optimize_for_inference(model, imgsz, decoder_layers)`, made once and reused while it is current.

    The copy is remade when the size, the decoder exit, the device or any weight changes: every
    in-place change of a tensor (an optimizer step, `load_state_dict`, `.to()`) bumps its version
    counter, and the key holds them all. (A copy takes about a second to make: prediction calls
    it per batch, so it must not be rebuilt each time.)
    """
    key = (tuple(imgsz), decoder_layers if decoder_layers is not None else model.decoder.eval_layers,
           tuple((id(t), t._version, t.device) for t in [*model.parameters(), *model.buffers()]))
    held = _COPIES.get(model)
    if held is None or held[0] != key:
        held = (key, optimize_for_inference(model, imgsz, decoder_layers))
        _COPIES[model] = held
    return held[1]


class OptimizedRTDETR(nn.Module):
    """`forward(x [B, 3, H, W])` -> {'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4]} for the fixed
    (H, W); with a mask head also 'mask_features' [B, D, H/4, W/4] and 'mask_queries' [B, Q, D]
    (float32), as `RTDETR` in eval mode.

    Holds the prepared model's backbone, encoder, decoder and mask head (None for a detector;
    their own forwards run) and keeps its `cfg` and `num_classes`; `imgsz` is the one input size,
    `dtype` the input (and backbone / encoder / pixel decoder) dtype.
    """

    def __init__(self, model: RTDETR, imgsz: tuple[int, int], dtype: torch.dtype, channels_last: bool):
        super().__init__()
        self.cfg = model.cfg
        self.imgsz = imgsz
        self.dtype = dtype
        self.channels_last = channels_last
        self.backbone = model.backbone
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.mask_head = model.mask_head

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def train(self, mode: bool = True) -> "OptimizedRTDETR":
        if mode:
            raise RuntimeError("an optimized model is for inference only; train the original model")
        return super().train(False)

    def forward(self, x: torch.Tensor, num_decoder_layers: int | None = None) -> dict:
        """`num_decoder_layers` is accepted for call compatibility with `RTDETR`; it must be the kept count."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.imgsz:
            raise ValueError(
                f"this optimized model takes [B, 3, {self.imgsz[0]}, {self.imgsz[1]}], got {list(x.shape)}; "
                f"make one for that size with optimize_for_inference(model, imgsz=(H, W))")
        if num_decoder_layers is not None and num_decoder_layers != self.decoder.num_layers:
            raise ValueError(f"this optimized model runs {self.decoder.num_layers} decoder layers, "
                             f"asked for {num_decoder_layers}; make one with decoder_layers={num_decoder_layers}")
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(self.backbone(x))
        out = self.decoder([f.float() for f in feats])  # no-op in float32; see `optimize_for_inference(dtype=...)`
        if self.mask_head is not None:  # the pixel decoder takes the maps in `dtype`
            out = self.mask_head(feats, out)
            out["mask_features"] = out["mask_features"].float()
        return out
