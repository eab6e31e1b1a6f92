"""`write_triton_repository`: an exported ONNX graph as an NVIDIA Triton model repository.

    from rtdetr.export import export_onnx, write_triton_repository
    write_triton_repository(export_onnx(model, "demo.onnx"), "models/")
    # models/demo/config.pbtxt, models/demo/1/model.onnx; then serve it:
    # docker run --gpus=all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/models:/models \
    #     nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver --model-repository=/models

The configuration is derived from the graph itself (`onnx.load`), not from what export meant
to write: every input and output with its name, its element type as Triton's TYPE_* and its
dims (-1 where the graph leaves a size free), on Triton's ONNX Runtime backend
(platform "onnxruntime_onnx"). For this library's graphs that is

    inputs   images [3, H, W] TYPE_FP32, orig_target_sizes [2] TYPE_INT64
    outputs  labels [K] TYPE_INT64, boxes [K, 4] TYPE_FP32, scores [K] TYPE_FP32
             (+ masks [K, H/4, W/4] TYPE_FP32 for a segmentation model)

each with the batch axis N in front, as the official RT-DETR deploy graph has them. The
`rtdetr.*` metadata (class names, task, input size, post-processing) becomes `parameters`
entries, their values JSON strings, for a client to read from the model's configuration.

Batching, and why a fixed batch is an error: with max_batch_size > 0 Triton leaves the batch
axis out of `dims`, prepends it itself, and its dynamic batcher concatenates requests along it,
so every input and output of the graph must have a free first axis (export's default,
dynamic_batch=True). A graph exported with a fixed batch (N = 1) cannot take that; it can be
served unbatched with max_batch_size=0 (full dims, no dynamic batcher), which must be asked for.

The text format is written here directly (a few dozen lines; no dependency on tritonclient).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from rtdetr.core.errors import require
from rtdetr.runtime.graph import decode_metadata

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"  # its ONNX Runtime runs opsets 17 and 18
KINDS = ("KIND_GPU", "KIND_CPU", "KIND_AUTO", "KIND_MODEL")

# onnx.TensorProto element types -> Triton's DataType names (model_config.proto).
_TRITON_TYPES = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
    13: "TYPE_UINT64", 16: "TYPE_BF16",
}


def write_triton_repository(onnx_path: str | Path, repo_dir: str | Path, *, model_name: str | None = None,
                            max_batch_size: int = 8, class_names: list[str] | None = None,
                            instance_group: str = "KIND_GPU", count: int = 1, dynamic_batching: bool = True,
                            max_queue_delay_us: int = 100, version: int = 1) -> Path:
    """Lay out `repo_dir/<model_name>/config.pbtxt` and `repo_dir/<model_name>/<version>/model.onnx`
    (a copy of `onnx_path`) for Triton's ONNX Runtime backend; returns the model's folder.

    model_name:     default: the graph file's name without `.onnx`
    max_batch_size: the largest batch Triton forms or accepts (> 0 needs a free batch axis, see
                    the module's notes); 0 serves the graph as it is, unbatched, with full dims
    class_names:    default: those in the graph's metadata (written by `export_onnx`); a model
                    without any (random weights) gets only the `num_classes` parameter
    instance_group: where the instances run, KIND_GPU (default), KIND_CPU, KIND_AUTO or
                    KIND_MODEL ("gpu" / "cpu" also do); `count` instances per device
    dynamic_batching: group concurrent requests into one batch, waiting at most
                    `max_queue_delay_us` microseconds (only with max_batch_size > 0)

    An existing folder of that model is updated: its config.pbtxt and this version's
    model.onnx are replaced, other versions are left alone.
    """
    onnx = require("onnx")
    onnx_path, repo_dir = Path(onnx_path), Path(repo_dir)
    if not onnx_path.is_file():
        raise ValueError(f"{onnx_path}: no such ONNX file (export one first: rtdetr export MODEL --out FILE.onnx)")
    model_name = model_name or onnx_path.stem
    if not model_name or any(c in model_name for c in "/\\") or model_name in (".", ".."):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    kind = instance_group.upper() if instance_group.upper().startswith("KIND_") else f"KIND_{instance_group.upper()}"
    if kind not in KINDS:
        raise ValueError(f"instance_group must be one of {', '.join(KINDS)} (or gpu / cpu), got {instance_group!r}")
    if count < 1 or version < 1 or max_batch_size < 0 or max_queue_delay_us < 0:
        raise ValueError(f"count and version must be at least 1, max_batch_size and max_queue_delay_us at least 0; "
                         f"got count={count}, version={version}, max_batch_size={max_batch_size}, "
                         f"max_queue_delay_us={max_queue_delay_us}")

    proto = onnx.load(str(onnx_path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ValueError(f"{onnx_path}: its weights are in external data files; re-export it as one file "
                         f"(export_onnx writes one) so model.onnx can be copied alone")
    meta = decode_metadata({p.key: p.value for p in proto.metadata_props})
    batched = max_batch_size > 0
    inputs = [_tensor(v, batched, onnx_path) for v in proto.graph.input]
    outputs = [_tensor(v, batched, onnx_path) for v in proto.graph.output]
    names = class_names if class_names is not None else meta.get("class_names")

    text = config_text(model_name, inputs, outputs, max_batch_size=max_batch_size, kind=kind, count=count,
                       queue_delay_us=max_queue_delay_us if (batched and dynamic_batching) else None,
                       parameters=_parameters(meta, names))
    model_dir = repo_dir / model_name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / str(version) / "model.onnx")
    (model_dir / "config.pbtxt").write_text(text)
    return model_dir


def serve_command(repo_dir: str | Path, image: str = TRITON_IMAGE) -> str:
    """The `docker run` line that serves the repository with Triton (HTTP 8000, gRPC 8001, metrics 8002)."""
    repo = Path(repo_dir).resolve()
    return (f"docker run --gpus=all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo}:/models "
            f"{image} tritonserver --model-repository=/models")


def _tensor(value, batched: bool, path: Path) -> tuple[str, str, list[int]]:
    """(name, Triton data type, dims) of one graph input or output; without the batch axis when batched."""
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or tensor.elem_type not in _TRITON_TYPES:
        raise ValueError(f"{path}: {value.name!r} is not a tensor of a type Triton knows "
                         f"(ONNX element type {tensor.elem_type})")
    # A named or unset size is free (-1); a known one is kept.
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim]
    if batched:
        if not dims or dims[0] != -1:
            raise ValueError(f"{path}: {value.name!r} has a fixed batch ({dims[0] if dims else 'no axis'}), so "
                             f"Triton cannot batch it: re-export with a dynamic batch (export_onnx's default, "
                             f"dynamic_batch=True), or pass max_batch_size=0 to serve it unbatched")
        dims = dims[1:]
    return value.name, _TRITON_TYPES[tensor.elem_type], dims


def _parameters(meta: dict, class_names) -> dict[str, str]:
    """The `parameters` entries: the class names and the graph's rtdetr metadata, each value JSON
    (as in the graph's own metadata: `json.loads` reads them all, the task "segment" included)."""
    params = {"class_names": class_names, "task": meta.get("task", "detect") if meta else None,
              "num_classes": meta.get("num_classes"), "imgsz": meta.get("imgsz"),
              "postprocess": meta.get("postprocess"), "num_top": meta.get("num_top"), "architecture": meta.get("name")}
    return {k: json.dumps(v, ensure_ascii=False) for k, v in params.items() if v is not None}


def config_text(name: str, inputs, outputs, *, max_batch_size: int, kind: str, count: int,
                queue_delay_us: int | None, parameters: dict[str, str]) -> str:
    """config.pbtxt in protobuf text format (Triton's `inference.ModelConfig`)."""
    def tensors(field: str, entries) -> list[str]:
        blocks = [f'  {{\n    name: {_quote(n)}\n    data_type: {t}\n    dims: [ {", ".join(map(str, d))} ]\n  }}'
                  for n, t, d in entries]
        return [f"{field} [", ",\n".join(blocks), "]"]

    lines = [f"name: {_quote(name)}", 'platform: "onnxruntime_onnx"', 'backend: "onnxruntime"',
             f"max_batch_size: {max_batch_size}", *tensors("input", inputs), *tensors("output", outputs),
             f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]"]
    if queue_delay_us is not None:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    lines += [f"parameters {{\n  key: {_quote(k)}\n  value: {{\n    string_value: {_quote(v)}\n  }}\n}}"
              for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def _quote(s: str) -> str:
    """A protobuf text-format string literal; non-ASCII characters as escaped UTF-8 bytes."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")  # octal escape: newlines, tabs and UTF-8 bytes alike
    return '"' + "".join(out) + '"'
