"""From raw outputs to detections: the official post-processor (top-k over queries x classes,
boxes in pixels), batched and exportable, the same code in PyTorch and in every exported graph."""
from __future__ import annotations

import torch
from torchvision.ops import box_convert


def postprocess_batched(logits: torch.Tensor, boxes: torch.Tensor, orig_sizes_wh: torch.Tensor,
                        num_top: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole batch at once, as tensors (no per-image loop, so it exports to ONNX).

    logits [N, Q, C], boxes [N, Q, 4] cx, cy, w, h normalised, orig_sizes_wh [N, 2] (w, h)
    -> labels [N, K] int64, boxes [N, K, 4] xyxy pixels, scores [N, K] sorted best first;
    K = min(num_top, Q*C). A query may appear with several classes.
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
    return labels, xyxy, scores


def postprocess(outputs: dict[str, torch.Tensor], orig_sizes_wh: torch.Tensor, num_top: int = 300,
                category_ids: list[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """`postprocess_batched` per image.

    outputs: 'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4] (cx, cy, w, h normalised)
    orig_sizes_wh: [B, 2] (width, height) the boxes are scaled to
    returns per image {'labels' [k] int64, 'boxes' [k, 4] xyxy pixels, 'scores' [k]}, sorted by score.
    category_ids: maps labels to data-set category ids (e.g. `rtdetr.core.coco_names.COCO_CATEGORY_IDS`).
    """
    labels, boxes, scores = postprocess_batched(outputs["pred_logits"], outputs["pred_boxes"],
                                                orig_sizes_wh.to(outputs["pred_boxes"].device), num_top)
    if category_ids is not None:
        labels = torch.as_tensor(category_ids, device=labels.device)[labels]
    return [{"labels": l, "boxes": b, "scores": s} for l, b, s in zip(labels, boxes, scores)]
