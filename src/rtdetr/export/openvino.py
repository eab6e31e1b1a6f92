"""OpenVINO IR files from exported ONNX graphs."""
from __future__ import annotations

from pathlib import Path

from rtdetr.core.errors import require


def save_openvino(onnx_path: str | Path, xml_path: str | Path | None = None) -> Path:
    """Convert an exported ONNX graph to OpenVINO IR (`.xml` + `.bin`), weights kept in fp32.

    (`openvino.save_model` compresses weights to fp16 unless told not to; the runtime precision
    is chosen when loading, with `OpenVinoModel(precision=...)`.) OpenVINO keeps the graph's
    `rtdetr.*` metadata in the IR's runtime info, under "framework".
    """
    ov = require("openvino")
    onnx_path = Path(onnx_path)
    xml_path = Path(xml_path) if xml_path is not None else onnx_path.with_suffix(".xml")
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path
