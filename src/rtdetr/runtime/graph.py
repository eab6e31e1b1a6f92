"""What an exported graph holds besides its operations: its output names and the `rtdetr.*`
metadata strings (architecture name, classes, input size, post-processing) export writes."""
from __future__ import annotations

import json
from pathlib import Path

from rtdetr.core.errors import require

RAW_OUTPUTS = ("pred_logits", "pred_boxes")
DETECTION_OUTPUTS = ("labels", "boxes", "scores")


def read_metadata(path: str | Path) -> dict:
    """The `rtdetr.*` metadata of an exported graph, decoded (keys without the prefix)."""
    onnx = require("onnx")
    proto = onnx.load(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in proto.metadata_props})


def decode_metadata(props: dict[str, str]) -> dict:
    """{'rtdetr.x': json} -> {'x': value}; other keys are ignored."""
    return {k.removeprefix("rtdetr."): json.loads(v) for k, v in props.items() if k.startswith("rtdetr.")}
