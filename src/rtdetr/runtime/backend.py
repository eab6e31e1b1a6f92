"""The one interface every way of running a detector offers, and the PyTorch one.

    backend = as_backend(model)                       # an RTDETR, a Detector, or an exported graph
    dets = backend.detect(images, orig_sizes_wh)      # per image {'labels', 'boxes', 'scores'}
                                                      # (+ 'masks' logits for segmentation models)

`Backend` is what prediction, evaluation and the benchmark call: `TorchBackend` (eager, or the
fused inference copy), `OnnxRuntimeModel`, `OpenVinoModel` and `TensorRTModel` (exported.py,
tensorrt.py) all give the same detections for the same inputs, through the same post-processor
(`rtdetr.models.postprocess`, inside the graph for exported models).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from rtdetr.models.nn.detector import RTDETR, module_of
from rtdetr.models.postprocess import postprocess
from rtdetr.runtime.fused import inference_copy
from rtdetr.runtime.graph import MASK_RAW_OUTPUTS, RAW_OUTPUTS


@runtime_checkable
class Backend(Protocol):
    """Runs a detector: images [B, 3, H, W] float RGB in [0, 1] (pre-processed) and the sizes
    [B, 2] (width, height) to scale boxes to -> per image {'labels' [k] int64, 'boxes' [k, 4]
    xyxy pixels, 'scores' [k]}, best first (k = num_top).

    A segmentation model's dicts also hold 'masks' [k, H/4, W/4] float32 mask LOGITS at 1/4 of
    the network input, row for row with 'boxes' (a mask is logit > 0); the caller brings them to
    the picture with `rtdetr.models.postprocess.paste_masks(masks, (height, width))`.
    """

    num_classes: int
    imgsz: tuple[int, int] | None  # the one input size it takes, or None for any multiple of 32
    precision: str

    def detect(self, images, orig_sizes_wh, num_top: int | None = None,
               category_ids: list[int] | None = None) -> list[dict[str, torch.Tensor]]: ...


class TorchBackend:
    """A PyTorch `RTDETR` as a backend: its fused inference copy (`optimize_for_inference`, made
    once per size, decoder exit and weights) or, with fused=False, the model itself.

    half: float16 autocast (CUDA only).
    """

    precision = "fp32"
    imgsz = None

    def __init__(self, model: nn.Module, *, fused: bool = True, decoder_layers: int | None = None,
                 half: bool = False):
        self.model = module_of(model)
        self.fused = fused and isinstance(self.model, RTDETR)
        self.decoder_layers = decoder_layers
        self.half = half
        if half:
            self.precision = "fp16"
        self._prepared: tuple[tuple[int, int], nn.Module] | None = None

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def prepare(self, imgsz: tuple[int, int]) -> None:
        """Make (or find) the fused copy for this size now, so that timing leaves it out; the
        next call at that size uses it without looking it up again."""
        if self.fused:
            self._prepared = (tuple(imgsz), inference_copy(self.model, tuple(imgsz), self.decoder_layers))

    def _fused_copy(self, hw: tuple[int, int]) -> nn.Module:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == hw:
            return prepared[1]  # checked as current by `prepare`, just before this call
        return inference_copy(self.model, hw, self.decoder_layers)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs {'pred_logits', 'pred_boxes'} (float32) of images [B, 3, H, W]; a
        segmentation model's also 'mask_features' [B, D, H/4, W/4] and 'mask_queries' [B, Q, D]."""
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.half else nullcontext()
        with torch.inference_mode(), autocast:
            if self.fused:
                out = self._fused_copy(tuple(images.shape[-2:]))(images)
            else:
                out = self.model(images, num_decoder_layers=self.decoder_layers)
        return {k: out[k].float() for k in RAW_OUTPUTS + MASK_RAW_OUTPUTS if k in out}

    def detect(self, images, orig_sizes_wh, num_top: int | None = None,
               category_ids: list[int] | None = None) -> list[dict[str, torch.Tensor]]:
        sizes = torch.as_tensor(orig_sizes_wh).reshape(-1, 2)
        return postprocess(self(images), sizes, num_top=num_top or 300, category_ids=category_ids)


def as_backend(model, *, fused: bool = True, decoder_layers: int | None = None, half: bool = False) -> Backend:
    """`model` as a `Backend`: an exported graph is one already; a PyTorch model (or a facade
    holding one) becomes a `TorchBackend`."""
    inner = module_of(model)
    if isinstance(inner, nn.Module):
        return TorchBackend(inner, fused=fused, decoder_layers=decoder_layers, half=half)
    if isinstance(inner, Backend):
        return inner
    raise TypeError(f"cannot run a {type(model).__name__}: expected an RTDETR, a Detector or an exported model")
