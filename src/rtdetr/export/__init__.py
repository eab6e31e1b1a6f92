"""Writing a detector for deployment: ONNX (post-processing inside), OpenVINO IR, int8, a Triton model repository.

    from rtdetr.export import export_onnx, quantize_int8, save_openvino, write_triton_repository
    export_onnx(model, "model.onnx")            # run it with rtdetr.load_model("model.onnx")
    write_triton_repository("model.onnx", "models/")   # models/model/config.pbtxt, 1/model.onnx
"""
from rtdetr.export.onnx import export_onnx, op_types
from rtdetr.export.openvino import save_openvino
from rtdetr.export.quantize import quantize_int8
from rtdetr.export.triton import write_triton_repository

__all__ = ["export_onnx", "op_types", "quantize_int8", "save_openvino", "write_triton_repository"]
