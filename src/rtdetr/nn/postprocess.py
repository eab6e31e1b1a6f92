"""From raw outputs to detections: top-k over queries x classes, boxes in pixels."""
from __future__ import annotations

import torch
from torchvision.ops import box_convert


def postprocess(outputs: dict[str, torch.Tensor], orig_sizes_wh: torch.Tensor, num_top: int = 300,
                category_ids: list[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """The official post-processor.

    outputs: 'pred_logits' [B, Q, K], 'pred_boxes' [B, Q, 4] (cx, cy, w, h normalised)
    orig_sizes_wh: [B, 2] (width, height) the boxes are scaled to
    returns per image {'labels' [k] int64, 'boxes' [k, 4] xyxy pixels, 'scores' [k]},
    k = min(num_top, Q*K), sorted by score. A query may appear with several classes.
    category_ids: maps labels to data-set category ids (e.g. `rtdetr.coco.COCO_CATEGORY_IDS`).
    """
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    num_classes = logits.shape[-1]
    boxes = box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")
    boxes = boxes * orig_sizes_wh.to(boxes).repeat(1, 2).unsqueeze(1)
    scores = logits.sigmoid().flatten(1)
    scores, index = torch.topk(scores, min(num_top, scores.shape[1]), dim=-1)
    labels = index % num_classes
    if category_ids is not None:
        labels = torch.as_tensor(category_ids, device=labels.device)[labels]
    query = index // num_classes
    boxes = boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
    return [{"labels": l, "boxes": b, "scores": s} for l, b, s in zip(labels, boxes, scores)]
