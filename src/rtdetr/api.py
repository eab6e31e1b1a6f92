"""The user-facing entry point: `load_model`."""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import torch

from . import zoo
from .checkpoint import CheckpointError, extract_state_dict, load_weights, num_classes_of, read_checkpoint
from .config import ModelConfig
from .hub import download
from .nn.detector import RTDETR, build_model
from .train.checkpoints import save_atomic

OFFICIAL = "official"
EXPORTED_SUFFIXES = (".onnx", ".xml", ".engine", ".plan")


def load_model(model: str | Path, weights: str | Path | None = OFFICIAL, *, num_classes: int | None = None,
               decoder_layers: int | None = None, device: str | torch.device = "cpu",
               runtime: str | None = None, **runtime_options):
    """A detector in eval mode, ready for `model(x)` and `rtdetr.predict`.

    model:   a zoo name (`rtdetr.list_models()`), the path of a checkpoint saved by this
             library (it carries its architecture and class names), or an exported model
             (`.onnx` for ONNX Runtime, `.xml` for OpenVINO, `.engine` for TensorRT; `runtime=`
             and `runtime_options` such as precision="bf16" or threads=2 choose how it runs).
    weights: "official" (default) downloads the zoo name's released COCO weights once into
             the cache; a zoo name downloads that model's weights; a path loads that file
             (official release files, official training checkpoints, or ours);
             None gives random initial weights.
    num_classes: defaults to what the weights were trained for (80 for COCO).
    decoder_layers: decoder layers run at inference (default: the architecture's own).
    """
    path = Path(model)
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        from .deploy import load_exported
        return load_exported(path, runtime=runtime, **runtime_options)
    if str(model) not in zoo.ZOO and (path.suffix in (".pt", ".pth") or path.exists()):
        return _load_own_checkpoint(path, decoder_layers, device)

    name = str(model)
    cfg = zoo.get_config(name, decoder_layers=decoder_layers)
    if weights is None:
        net = build_model(cfg.with_classes(num_classes or cfg.num_classes))
        return net.eval().to(device)

    weights_path = resolve_weights(name if weights == OFFICIAL else weights)
    ckpt = read_checkpoint(weights_path)
    sd = extract_state_dict(ckpt, weights_path)
    file_classes = num_classes_of(sd)
    cfg = cfg.with_classes(num_classes or file_classes or cfg.num_classes)
    net = build_model(cfg)
    load_weights(net, sd, weights_path, cfg.name)
    _attach_metadata(net, ckpt)
    return net.eval().to(device)


def resolve_weights(weights: str | Path) -> Path:
    """A local file for `weights`: an existing path, or a zoo name whose release file is downloaded."""
    if str(weights) in zoo.ZOO:
        entry = zoo.get_entry(str(weights))
        if entry.weights is None:
            raise ValueError(f"{weights}: no released weights are known for this model")
        return download(entry.weights.url)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (and not a zoo model name; see rtdetr.list_models())")
    return path


def _load_own_checkpoint(path: Path, decoder_layers: int | None, device) -> RTDETR:
    ckpt = read_checkpoint(path)
    meta = ckpt.get("rtdetr")
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(
            f"{path}: carries no architecture (an official file?); use load_model(NAME, weights='{path}')")
    cfg = ModelConfig.from_dict(meta["config"])
    if decoder_layers is not None:
        cfg = replace(cfg, decoder=replace(cfg.decoder, eval_layers=decoder_layers))
    net = build_model(cfg)
    load_weights(net, extract_state_dict(ckpt, path), path, cfg.name)
    _attach_metadata(net, ckpt)
    return net.eval().to(device)


def _attach_metadata(net: RTDETR, ckpt: dict) -> None:
    meta = ckpt.get("rtdetr") if isinstance(ckpt.get("rtdetr"), dict) else {}
    names, ids = meta.get("class_names"), meta.get("category_ids")
    if names is not None and len(names) != net.num_classes:
        warnings.warn(f"checkpoint lists {len(names)} class names for {net.num_classes} classes; ignoring them")
        names = None
    net.class_names = names
    # The data set's own category ids (label -> id), for results in COCO format.
    net.category_ids = list(ids) if ids is not None and len(ids) == net.num_classes else None


def save_checkpoint(net: RTDETR, path: str | Path, class_names: list[str] | None = None,
                    category_ids: list[int] | None = None, **extra) -> Path:
    """Write `net` in the library's own format (architecture, class names and category ids), atomically."""
    meta = {"config": net.cfg.to_dict(), "class_names": class_names, "category_ids": category_ids}
    payload = {"model": net.state_dict(), "rtdetr": meta, **extra}
    return save_atomic(payload, path)
