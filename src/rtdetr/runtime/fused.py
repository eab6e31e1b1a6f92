"""`optimize_for_inference`: a fixed-size, inference-only copy of a detector for the fast eager path.

    fast = optimize_for_inference(model, imgsz=(640, 640))
    out = fast(x)                    # x [B, 3, 640, 640] -> {'pred_logits', 'pred_boxes'}, as model(x) in eval mode

What changes, and why each step is exact (same outputs within float rounding, < 1e-4):
- every conv + batch norm (plain or frozen) becomes one conv with bias, and every RepVGG
  block one 3x3 conv (`fold.py`): the norms are fixed affine maps at inference;
- the decoder keeps only the layers up to the chosen exit and the heads those layers use;
  the denoising embedding and the auxiliary / encoder-loss outputs (training only) go;
- the input size is fixed when the copy is made, so the AIFI position embedding, the
  anchors and the valid mask are plain buffers computed once (no per-call cache look-ups);
- the encoder's box head runs on the selected top-k queries only (300 of the 8400 tokens at
  640x640) instead of on every token: it is a per-token MLP, so the selected rows are the same;
- attention runs through `F.scaled_dot_product_attention` with q and k projected together;
  on CPU, linear layers and convolutions (with their activations) call oneDNN directly and
  conv activations stay channels-last (`kernels.py`; measured in benchmarks/fused.py);
- every parameter stops requiring gradients, and the copy refuses `.train()`.

The copy accepts only the size it was made for (any batch size): another size raises a
one-line error that says how to make a copy for it. That keeps the fast path free of size
checks and caches; `model` itself still takes any multiple of 32.
"""
from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from rtdetr.models.nn.common import inverse_sigmoid
from rtdetr.models.nn.decoder import RTDETRDecoder
from rtdetr.models.nn.detector import RTDETR, module_of
from rtdetr.models.nn.hybrid_encoder import HybridEncoder, cross_scale_fusion
from rtdetr.models.reparam import fold_conv_norms
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

    src = copy.deepcopy(model).eval()
    fold_conv_norms(src.backbone)
    fold_conv_norms(src.encoder)
    fold_conv_norms(src.decoder.input_proj)
    top = src.encoder.feat_strides[-1]
    encoder = FixedSizeEncoder(src.encoder, h // top, w // top, channels_last)
    decoder = FixedSizeDecoder(src.decoder, [(h // s, w // s) for s in src.encoder.out_strides], run)
    fast = OptimizedRTDETR(src, encoder, decoder, (h, w), channels_last)
    use_self_attention(fast)
    # Reduced precision only for the convolutional trunk (most of the time): query selection
    # and the decoder's sampling locations need float32 (bfloat16 locations are off by up to
    # a third of a cell on an 80-cell map).
    fast.backbone.to(dtype=dtype)
    fast.encoder.to(dtype=dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)  # conv weights; the input is converted per call
    if onednn:  # after the dtype cast: these check the weights' dtype
        use_onednn_linears(fast)
        use_onednn_convs(fast)
    fast.requires_grad_(False)
    return fast.eval()


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
    """`forward(x [B, 3, H, W])` -> {'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4]} for the fixed (H, W).

    Keeps `cfg` and `num_classes` of the source model.
    """

    def __init__(self, src: RTDETR, encoder: "FixedSizeEncoder", decoder: "FixedSizeDecoder",
                 imgsz: tuple[int, int], channels_last: bool):
        super().__init__()
        self.cfg = src.cfg
        self.imgsz = imgsz
        self.channels_last = channels_last
        self.backbone = src.backbone
        self.encoder = encoder
        self.decoder = decoder

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def dtype(self) -> torch.dtype:
        """The input (and backbone / encoder) dtype."""
        return self.encoder.pos_embed.dtype

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
        return self.decoder(self.encoder(self.backbone(x)))


class FixedSizeEncoder(nn.Module):
    """The hybrid encoder (already folded) with its AIFI position embedding as a buffer.

    [C3, C4, C5] -> [P3, P4, P5], each [B, hidden_dim, H/s, W/s]; same computation as
    `HybridEncoder.forward`, for one stride-32 map size (h, w).
    """

    def __init__(self, enc: HybridEncoder, h: int, w: int, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        if enc.use_encoder_idx != [len(enc.in_channels) - 1]:
            raise ValueError(f"expected AIFI on the last level only, got use_encoder_idx={enc.use_encoder_idx}")
        self.input_proj = enc.input_proj
        self.aifi = enc.encoder[0]
        self.lateral_convs = enc.lateral_convs
        self.fpn_blocks = enc.fpn_blocks
        self.downsample_convs = enc.downsample_convs
        self.pan_blocks = enc.pan_blocks
        ref = next(enc.parameters())
        self.register_buffer("pos_embed", enc.position_embedding(h, w, ref).clone())  # [1, h*w, C]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        proj = [p(f) for p, f in zip(self.input_proj, feats)]

        # AIFI: attention over the tokens of the stride-32 map.
        b, c, h, w = proj[-1].shape
        tokens = proj[-1].flatten(2).permute(0, 2, 1)                          # [B, h*w, C]
        memory = self.aifi(tokens, self.pos_embed)
        # [B, h*w, C] viewed as [B, C, h, w] is already channels-last; NCHW needs a copy.
        memory = memory.permute(0, 2, 1).reshape(b, c, h, w)
        proj[-1] = memory if self.channels_last else memory.contiguous()

        return cross_scale_fusion(self, proj)


class FixedSizeDecoder(nn.Module):
    """Query selection and the first `num_layers` decoder layers, for fixed level sizes.

    [P3, P4, P5] -> {'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4]}; the same computation as
    `RTDETRDecoder.forward` in eval mode with `num_layers` layers.
    """

    def __init__(self, dec: RTDETRDecoder, shapes: list[tuple[int, int]], num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.num_queries = dec.num_queries
        self.spatial_shapes = [tuple(s) for s in shapes]   # python ints: no tensor -> int syncs
        if sum(h * w for h, w in shapes) < self.num_queries:
            raise ValueError(f"input too small: {sum(h * w for h, w in shapes)} feature cells for "
                             f"{self.num_queries} queries (use at least 160x160)")
        self.input_proj = dec.input_proj
        self.enc_output = dec.enc_output
        self.enc_score_head = dec.enc_score_head
        self.enc_bbox_head = dec.enc_bbox_head
        self.query_pos_head = dec.query_pos_head
        self.layers = nn.ModuleList(dec.decoder.layers[:num_layers])
        self.bbox_heads = nn.ModuleList(dec.dec_bbox_head[:num_layers])
        self.score_head = dec.dec_score_head[num_layers - 1]  # only the exit layer's scores are used
        ref = next(dec.parameters())
        anchors, valid = dec.anchors(self.spatial_shapes, ref)
        self.register_buffer("anchors", anchors.clone())                        # [1, L, 4] logits, inf if invalid
        self.register_buffer("valid", valid.to(ref.dtype).clone())              # [1, L, 1] 1.0 / 0.0

    def forward(self, feats: list[torch.Tensor]) -> dict:
        feats = [f.float() for f in feats]  # no-op in float32; see `optimize_for_inference(dtype=...)`
        memory = torch.cat([p(f).flatten(2).permute(0, 2, 1) for p, f in zip(self.input_proj, feats)], dim=1)

        # Query selection: the top-k tokens by their best class score.
        output_memory = self.enc_output(self.valid * memory)                    # [B, L, C]
        scores = self.enc_score_head(output_memory).max(-1).values              # [B, L]
        topk = torch.topk(scores, self.num_queries, dim=-1).indices             # [B, Q]
        target = output_memory.gather(1, topk.unsqueeze(-1).expand(-1, -1, output_memory.shape[-1]))
        anchors = self.anchors.expand(memory.shape[0], -1, -1).gather(1, topk.unsqueeze(-1).expand(-1, -1, 4))
        ref = torch.sigmoid(self.enc_bbox_head(target) + anchors)              # [B, Q, 4] cx, cy, w, h

        # Decoder layers with iterative box refinement.
        for layer, bbox_head in zip(self.layers, self.bbox_heads):
            target = layer(target, ref.unsqueeze(2), memory, self.spatial_shapes, self.query_pos_head(ref))
            ref = torch.sigmoid(bbox_head(target) + inverse_sigmoid(ref))
        return {"pred_logits": self.score_head(target), "pred_boxes": ref}
