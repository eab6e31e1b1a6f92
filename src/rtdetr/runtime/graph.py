"""What an exported graph holds besides its operations: its output names and the `rtdetr.*`
metadata strings (architecture name, classes, input size, post-processing, task) export writes.

A segmentation graph is told by its output names: `masks` beside the detections, or the mask
factors beside the raw outputs (`is_segmentation`); its metadata also says task "segment"."""
from __future__ import annotations

import json
from pathlib import Path

from rtdetr.core.errors import require

RAW_OUTPUTS = ("pred_logits", "pred_boxes")
DETECTION_OUTPUTS = ("labels", "boxes", "scores")
MASK_RAW_OUTPUTS = ("mask_features", "mask_queries")  # [N, D, H/4, W/4], [N, Q, D]
MASK_OUTPUT = "masks"                                  # [N, K, H/4, W/4] float32 mask logits


def is_segmentation(output_names) -> bool:
    """Whether a graph with these outputs gives masks: `masks`, or both mask factors."""
    names = set(output_names)
    return MASK_OUTPUT in names or names >= set(MASK_RAW_OUTPUTS)


def read_metadata(path: str | Path) -> dict:
    """The `rtdetr.*` metadata of an exported graph, decoded (keys without the prefix)."""
    onnx = require("onnx")
    proto = onnx.load(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in proto.metadata_props})


def decode_metadata(props: dict[str, str]) -> dict:
    """{'rtdetr.x': json} -> {'x': value}; other keys are ignored."""
    return {k.removeprefix("rtdetr."): json.loads(v) for k, v in props.items() if k.startswith("rtdetr.")}
