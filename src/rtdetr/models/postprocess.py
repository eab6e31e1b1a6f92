"""From raw outputs to detections: the official post-processor (top-k over queries x classes,
boxes in pixels), batched and exportable, the same code in PyTorch and in every exported graph;
for segmentation models also the detections' mask logits (at 1/4 of the network input), and
`paste_masks`, which brings them to a picture's pixels (outside any graph)."""
from __future__ import annotations

import torch
from torchvision.ops import box_convert


def postprocess_batched(logits: torch.Tensor, boxes: torch.Tensor, orig_sizes_wh: torch.Tensor,
                        num_top: int = 300, mask_queries: torch.Tensor | None = None,
                        mask_features: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """The whole batch at once, as tensors (no per-image loop, so it exports to ONNX).

    logits [N, Q, C], boxes [N, Q, 4] cx, cy, w, h normalised, orig_sizes_wh [N, 2] (w, h)
    -> labels [N, K] int64, boxes [N, K, 4] xyxy pixels, scores [N, K] sorted best first;
    K = min(num_top, Q*C). A query may appear with several classes.

    With a mask head's factors, mask_queries [N, Q, D] and mask_features [N, D, h, w] (1/4 of
    the network input), a fourth result: the detections' mask logits [N, K, h, w] (a mask is
    logit > 0; `paste_masks` brings one image's to its pixels). Only the K selected queries
    are multiplied with the features (never all Q); a query kept with two classes gets its
    mask twice.
    """
    # Python ints (queries and classes are fixed), so that K is a constant in the graph.
    num_queries, num_classes = int(logits.shape[1]), int(logits.shape[2])
    xyxy = box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")
    xyxy = xyxy * orig_sizes_wh.to(xyxy.dtype).repeat(1, 2).unsqueeze(1)
    scores = logits.sigmoid().flatten(1)
    scores, index = torch.topk(scores, min(num_top, num_queries * num_classes), dim=-1)
    labels = index % num_classes
    query = index // num_classes
    xyxy = xyxy.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
    if mask_queries is None and mask_features is None:
        return labels, xyxy, scores
    if mask_queries is None or mask_features is None:
        raise ValueError("masks need both mask_queries and mask_features")
    masks = mask_logits(select_mask_queries(mask_queries, query), mask_features)
    return labels, xyxy, scores, masks


def has_masks(outputs: dict) -> bool:
    """Whether raw outputs carry a mask head's factors ('mask_queries' and 'mask_features')."""
    return "mask_queries" in outputs and "mask_features" in outputs


def postprocess(outputs: dict[str, torch.Tensor], orig_sizes_wh: torch.Tensor, num_top: int = 300,
                category_ids: list[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """`postprocess_batched` per image.

    outputs: 'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4] (cx, cy, w, h normalised), and
             for a segmentation model 'mask_queries' [B, Q, D], 'mask_features' [B, D, h, w]
    orig_sizes_wh: [B, 2] (width, height) the boxes are scaled to
    returns per image {'labels' [k] int64, 'boxes' [k, 4] xyxy pixels, 'scores' [k]}, sorted by
    score; with mask factors also 'masks' [k, h, w] float32 LOGITS at 1/4 of the network input,
    row for row with 'boxes' (`paste_masks(masks, (H, W))` gives the picture's bool masks).
    category_ids: maps labels to data-set category ids (e.g. `rtdetr.core.coco_names.COCO_CATEGORY_IDS`).
    """
    device = outputs["pred_boxes"].device
    factors = (outputs["mask_queries"], outputs["mask_features"]) if has_masks(outputs) else ()
    labels, boxes, scores, *masks = postprocess_batched(outputs["pred_logits"], outputs["pred_boxes"],
                                                        orig_sizes_wh.to(device), num_top, *factors)
    if category_ids is not None:
        labels = torch.as_tensor(category_ids, device=labels.device)[labels]
    dets = [{"labels": l, "boxes": b, "scores": s} for l, b, s in zip(labels, boxes, scores)]
    for det, m in zip(dets, masks[0].float() if masks else ()):
        det["masks"] = m
    return dets


def select_mask_queries(mask_queries: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """mask_queries [N, Q, C] (per-query mask embeddings), query [N, K] (the query of each
    detection, `postprocess_batched`'s index // classes) -> [N, K, C]."""
    return mask_queries.gather(1, query.unsqueeze(-1).expand(-1, -1, mask_queries.shape[-1]))


def mask_logits(queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mask logits of the given queries: queries [N, K, C], pixel features [N, C, h, w] (1/4 of
    the network input) -> [N, K, h, w]. A mask is the pixels where the logit is above 0."""
    return torch.einsum("nkc,nchw->nkhw", queries, features)


def paste_masks(logits: torch.Tensor, orig_hw: tuple[int, int], threshold: float = 0.0,
                boxes_xyxy: torch.Tensor | None = None) -> torch.Tensor:
    """One picture's mask logits [k, h, w] at 1/4 of the network input -> bool [k, H, W] in the
    picture's own pixels.

    The logits are upsampled bilinearly before thresholding (thresholding first, then
    upsampling, gives staircase edges); the network input is the whole picture resized without
    keeping the aspect ratio, so the map stretches to (H, W) per axis. threshold: on the logit
    (0: probability 0.5). boxes_xyxy [k, 4] pixels: also clear the pixels outside each box
    (prediction and evaluation pass the detections' boxes: masks are learnt inside their boxes,
    `rtdetr.train.mask_losses`, so outside them the map is untrained).
    """
    h, w = int(orig_hw[0]), int(orig_hw[1])
    if logits.shape[0] == 0:
        return torch.zeros((0, h, w), dtype=torch.bool, device=logits.device)
    up = torch.nn.functional.interpolate(logits[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
    masks = up > threshold
    if boxes_xyxy is not None:
        ys = torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5
        xs = torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5
        b = boxes_xyxy.to(logits.device, torch.float32)
        inside_x = (xs[None] >= b[:, 0:1]) & (xs[None] <= b[:, 2:3])   # [k, W]
        inside_y = (ys[None] >= b[:, 1:2]) & (ys[None] <= b[:, 3:4])   # [k, H]
        masks &= inside_y[:, :, None] & inside_x[:, None, :]
    return masks
