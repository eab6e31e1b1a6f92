"""Writing a detector for deployment: ONNX (post-processing inside), OpenVINO IR, int8.

    from rtdetr.export import export_onnx, quantize_int8, save_openvino
    export_onnx(model, "model.onnx")            # run it with rtdetr.load_model("model.onnx")
"""
from rtdetr.export.onnx import export_onnx, op_types
from rtdetr.export.openvino import save_openvino
from rtdetr.export.quantize import quantize_int8

__all__ = ["export_onnx", "op_types", "quantize_int8", "save_openvino"]
