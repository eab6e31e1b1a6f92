"""`export_onnx`: a detector as an ONNX graph, post-processing included, like the official deploy graph.

    from rtdetr.export import export_onnx
    export_onnx(model, "model.onnx")                        # 640x640, any batch size
    export_onnx(model, "raw.onnx", postprocess=False)       # outputs pred_logits, pred_boxes

The graph (postprocess=True, the default):

    inputs   images             [N, 3, H, W] float32, RGB in [0, 1] (resized, no mean/std)
             orig_target_sizes  [N, 2] int64, (width, height) the boxes are scaled to
    outputs  labels             [N, K] int64, the model's 0-based class indices
             boxes              [N, K, 4] float32, x1, y1, x2, y2 in those pixels
             scores             [N, K] float32, sorted best first; K = num_top (300)

With postprocess=False: input `images` only; outputs `pred_logits` [N, Q, classes] and
`pred_boxes` [N, Q, 4] (cx, cy, w, h normalised), what `model(x)` returns. keep_raw=True
gives both: the detections, then the raw outputs (to check a runtime against PyTorch).

A segmentation model (`*_seg`, a mask head) adds, after the detections,
             masks              [N, K, H/4, W/4] float32, each detection's mask LOGITS (a mask
                                is logit > 0), row for row with `boxes`
and to the raw outputs `mask_features` [N, D, H/4, W/4] and `mask_queries` [N, Q, D] (the
factors: logits = einsum("nqd,ndhw->nqhw")); its metadata says `rtdetr.task` "segment", and
the runtimes tell a segmentation graph by those output names. The masks stay at 1/4 of the
input inside the graph: bringing them to a picture (`rtdetr.models.postprocess.paste_masks`,
bilinear, then the threshold) is the caller's, outside it. Only the K kept detections' logits
are computed (a gather of K query embeddings, then one Einsum).

Which exporter, and why (torch 2.14.1, rtdetrv2_r18vd and _dsp at 640x640, 2 CPU threads):
- The TorchScript exporter (`dynamo=False`; the default here for fixed sizes) exports r18 in
  2-9 s, needs no package beyond onnx, and keeps PyTorch's operations one for one: ONNX
  Runtime reproduces eager to ~4e-6, queries in the same order. It is deprecated, and it
  cannot make the input size variable: the model computes its position embeddings from
  Python ints (`int(w)`), which tracing freezes at the example size.
- The dynamo exporter (`dynamo=True`, needs onnxscript) takes 10-17 s for a fixed size, and
  with symbolic H and W computes anchors and position embeddings inside the graph
  (`dynamic_hw=True`; ~4e-6 from eager at 480x800 from a 640x640 export), at 25-55 s per
  export: torch.export's non-strict pass fails on the size caches (a SymInt is not
  hashable) and the exporter falls back to its strict (TorchDynamo) pass, which works.
  Its graph optimiser reorders near-tied queries (harmless, the sets are equal).
So fixed-size graphs use the TorchScript exporter and `dynamic_hw=True` uses dynamo, unless
`dynamo=` says otherwise. Either way, export clears the model's size caches before and after
(tracing leaves traced or fake tensors there, which later eager calls must not get).

Discrete sampling rounds each sampling location to a cell, so a location within float
rounding of a cell boundary may land in the neighbouring cell in another runtime (GEMM
kernels differ in the last bit): about one query in 300, on some images, then moves by ~1e-3.

The discrete-sampling models (`*_dsp`, `cross_attn_method='discrete'`) export without any
GridSample node (gathers instead), for runtimes that lack it.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from rtdetr.core.errors import require
from rtdetr.models.nn.detector import module_of
from rtdetr.models.nn.position import SizeCache
from rtdetr.models.postprocess import postprocess_batched
from rtdetr.models.nn.mask_head import MASK_STRIDE
from rtdetr.runtime.graph import DETECTION_OUTPUTS, MASK_OUTPUT, MASK_RAW_OUTPUTS, RAW_OUTPUTS
from rtdetr.core.sizes import check_imgsz

DYNAMO_MIN_OPSET = 18  # the dynamo exporter's native opset; lower ones go through a lossy converter




class DeployGraph(nn.Module):
    """What gets exported: the detector, then (optionally) the post-processing, with tensor outputs.

    A segmentation model (one with a mask head) also outputs `masks` (the detections' mask
    logits), or the mask factors `mask_features`, `mask_queries` among its raw outputs.
    """

    def __init__(self, model: nn.Module, postprocess: bool = True, num_top: int = 300,
                 decoder_layers: int | None = None, keep_raw: bool = False):
        super().__init__()
        self.model = model
        self.postprocess = postprocess
        self.num_top = num_top
        self.decoder_layers = decoder_layers
        self.keep_raw = keep_raw and postprocess
        self.masks = getattr(model, "mask_head", None) is not None

    def raw_names(self) -> list[str]:
        return list(RAW_OUTPUTS) + (list(MASK_RAW_OUTPUTS) if self.masks else [])

    def output_names(self) -> list[str]:
        if not self.postprocess:
            return self.raw_names()
        detections = list(DETECTION_OUTPUTS) + ([MASK_OUTPUT] if self.masks else [])
        return detections + (self.raw_names() if self.keep_raw else [])

    def output_shapes(self, batch: int, hw: tuple[int, int] | None) -> list[list[int | None]]:
        """The shape of each output for `batch` images of hw = (H, W) (None: any size). Only the
        masks and mask features depend on the size: H/4 x W/4, None when it is dynamic."""
        q, c = self.model.cfg.decoder.num_queries, self.model.cfg.num_classes
        raw = [[batch, q, c], [batch, q, 4]]
        grid = [hw[0] // MASK_STRIDE, hw[1] // MASK_STRIDE] if hw is not None else [None, None]
        if self.masks:
            dim = self.model.mask_head.dim
            raw += [[batch, dim, *grid], [batch, q, dim]]
        if not self.postprocess:
            return raw
        k = min(self.num_top, q * c)
        detections = [[batch, k], [batch, k, 4], [batch, k]] + ([[batch, k, *grid]] if self.masks else [])
        return detections + (raw if self.keep_raw else [])

    def forward(self, images: torch.Tensor, orig_target_sizes: torch.Tensor | None = None):
        if self.decoder_layers is None:
            out = self.model(images)
        else:
            out = self.model(images, num_decoder_layers=self.decoder_layers)
        raw = tuple(out[name] for name in self.raw_names())
        if not self.postprocess:
            return raw
        detections = postprocess_batched(*raw[:2], orig_target_sizes, self.num_top, *_factors(out, self.masks))
        return detections + raw if self.keep_raw else detections


def _factors(out: dict, masks: bool) -> tuple:
    """(mask_queries, mask_features) in `postprocess_batched`'s order, or () for a detector."""
    return (out["mask_queries"], out["mask_features"]) if masks else ()


def export_onnx(model, path: str | Path, imgsz: int | tuple[int, int] = (640, 640), *,
                opset: int = 17, dynamic_batch: bool = True, dynamic_hw: bool = False,
                postprocess: bool = True, num_top: int = 300, decoder_layers: int | None = None,
                keep_raw: bool = False, dynamo: bool | None = None, check: bool = True) -> Path:
    """Write `model` (a `Detector` or an `RTDETR`) as an ONNX graph at `path` (one file, weights
    included) and return the path.

    imgsz:         (height, width) of the example input, multiples of 32 (an int: square); the
                   graph accepts only this size unless dynamic_hw=True
    opset:         ONNX opset, at least 17 (LayerNormalization); dynamo uses at least 18
    dynamic_batch: any batch size N (else N = 1)
    dynamic_hw:    any H and W that are multiples of 32 (needs the dynamo exporter, onnxscript)
    postprocess:   end in the official post-processing (labels, boxes, scores), else raw outputs
    num_top:       detections kept per image by the post-processing
    keep_raw:      with postprocess, also output pred_logits and pred_boxes
    decoder_layers: decoder layers baked into the graph (default: the model's own)
    dynamo:        pick the exporter (default: TorchScript for fixed sizes, dynamo for dynamic_hw)
    check:         run `onnx.checker` on the result

    The class names, the input size and the export options are stored in the graph's metadata
    (`rtdetr.*` keys), where `rtdetr.runtime.OnnxRuntimeModel` and `OpenVinoModel` read them.
    """
    onnx = require("onnx")  # before the export's seconds, not after
    if opset < 17:
        raise ValueError(f"opset must be at least 17 (LayerNormalization), got {opset}")
    h, w = check_imgsz(imgsz)
    use_dynamo = dynamic_hw if dynamo is None else dynamo
    if dynamic_hw and not use_dynamo:
        raise ValueError("dynamic_hw=True needs the dynamo exporter (dynamo=True): the TorchScript "
                         "exporter freezes the anchors and position embeddings at the example size")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    facade, model = model, module_of(model)  # the metadata is the facade's, the graph the network's
    was_training = model.training
    graph = DeployGraph(model, postprocess, num_top, decoder_layers, keep_raw).eval()  # inference graph
    example = _example_inputs(graph, h, w, batch=2 if (use_dynamo and dynamic_batch) else 1)

    # Cached entries would be baked into the graph as constants (and confuse dynamo's size tracing).
    _clear_size_caches(model)
    try:
        with torch.no_grad():
            if use_dynamo:
                _export_dynamo(graph, example, path, max(opset, DYNAMO_MIN_OPSET), dynamic_batch, dynamic_hw)
            else:
                _export_torchscript(graph, example, path, opset, dynamic_batch)
    finally:
        # Tracing fills the caches with traced or fake tensors, which eager calls must not see.
        _clear_size_caches(model)
        model.train(was_training)

    meta = _metadata(facade, graph, (h, w), dynamic_batch, dynamic_hw, use_dynamo)
    _finish(path, meta, graph.output_shapes(batch=1, hw=None if dynamic_hw else (h, w)), dynamic_batch)
    if check:
        onnx.checker.check_model(str(path), full_check=True)
    return path



def _example_inputs(graph: DeployGraph, h: int, w: int, batch: int) -> tuple[torch.Tensor, ...]:
    """images [batch, 3, h, w] (and orig_target_sizes [batch, 2] when post-processing).

    The dynamo exporter treats a size of 1 as a constant, so a dynamic batch is traced with 2.
    """
    device = next(graph.model.parameters()).device
    images = torch.rand(batch, 3, h, w, device=device)
    if not graph.postprocess:
        return (images,)
    return images, torch.tensor([[w, h]] * batch, dtype=torch.int64, device=device)


def _names(graph: DeployGraph) -> tuple[list[str], list[str]]:
    inputs = ["images", "orig_target_sizes"] if graph.postprocess else ["images"]
    return inputs, graph.output_names()


def _export_torchscript(graph: DeployGraph, example: tuple, path: Path, opset: int, dynamic_batch: bool) -> None:
    inputs, outputs = _names(graph)
    dynamic_axes = {name: {0: "N"} for name in inputs + outputs} if dynamic_batch else None
    with warnings.catch_warnings():
        # Expected and harmless here: the exporter's deprecation notice, and tracer warnings about
        # Python ints taken from shapes (the size is fixed in this graph, by design).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=opset,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)


def _export_dynamo(graph: DeployGraph, example: tuple, path: Path, opset: int, dynamic_batch: bool,
                   dynamic_hw: bool) -> None:
    if importlib.util.find_spec("onnxscript") is None:  # the dynamo exporter's translator
        raise ImportError("the dynamo ONNX exporter needs onnxscript: pip install onnxscript")
    from torch.export import Dim

    inputs, outputs = _names(graph)
    batch = Dim("N", min=1, max=4096) if dynamic_batch else None
    image_dims = {0: batch} if dynamic_batch else {}
    if dynamic_hw:  # multiples of 32, from 160 (enough cells for the queries) to 4096 pixels
        image_dims.update({2: 32 * Dim("h", min=5, max=128), 3: 32 * Dim("w", min=5, max=128)})
    shapes = [image_dims or None]
    if graph.postprocess:
        shapes.append({0: batch} if dynamic_batch else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sym-int notes from torch.export
        torch.onnx.export(graph, example, str(path), dynamo=True, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_shapes=tuple(shapes), external_data=False,
                          verbose=False)


def _clear_size_caches(model: nn.Module) -> None:
    """Empty the per-size caches (anchors, position embeddings) of every submodule."""
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, SizeCache):
                value.clear()


def _metadata(model: nn.Module, graph: DeployGraph, imgsz: tuple[int, int], dynamic_batch: bool,
              dynamic_hw: bool, dynamo: bool) -> dict[str, str]:
    """The `rtdetr.*` metadata strings stored in the graph."""
    cfg = getattr(model, "cfg", None)
    decoder = getattr(model, "decoder", None)
    layers = graph.decoder_layers or getattr(decoder, "eval_layers", None)
    meta = {
        "name": getattr(cfg, "name", type(model).__name__),
        "num_classes": getattr(model, "num_classes", None),
        "class_names": getattr(model, "class_names", None),
        "category_ids": getattr(model, "category_ids", None),
        "imgsz": None if dynamic_hw else list(imgsz),
        "dynamic_batch": dynamic_batch,
        "postprocess": graph.postprocess,
        "keep_raw": graph.keep_raw,
        "num_top": graph.num_top if graph.postprocess else None,
        "decoder_layers": layers,
        "exporter": "dynamo" if dynamo else "torchscript",
        "torch": torch.__version__,
    }
    if graph.masks:  # (a detector's metadata stays as it was: no key means "detect")
        meta["task"] = "segment"
    return {f"rtdetr.{k}": json.dumps(v) for k, v in meta.items()}


def _finish(path: Path, meta: dict[str, str], output_shapes: list[list[int | None]], dynamic_batch: bool) -> None:
    """Store the metadata, and write the outputs' fixed sizes into the graph's declared shapes.

    (The TorchScript exporter names every output dimension it could not infer, K = 300
    included; the sizes after the batch do not depend on the input size, except the masks'
    H/4 x W/4, left to the exporter (None) when H and W are dynamic.)
    """
    onnx = require("onnx")
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, meta)
    for value, shape in zip(proto.graph.output, output_shapes):
        for i, (dim, size) in enumerate(zip(value.type.tensor_type.shape.dim, shape)):
            if i == 0 and dynamic_batch:
                dim.dim_param = "N"
            elif size is not None:
                dim.dim_value = size
    onnx.save(proto, str(path))



def op_types(path: str | Path) -> set[str]:
    """The operator types used anywhere in the graph (e.g. to check that no GridSample is left)."""
    onnx = require("onnx")
    proto = onnx.load(str(path), load_external_data=False)
    found: set[str] = set()
    stack = [proto.graph, *proto.functions]
    while stack:  # walk subgraphs (If / Loop bodies) and local functions too
        g = stack.pop()
        for node in g.node:
            found.add(node.op_type)
            for a in node.attribute:
                stack.extend([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)
    return found
