"""Reading checkpoints: the official release files and the library's own.

Accepted layouts: `{'ema': {'module': sd}}` (official releases, preferred when present),
`{'model': sd}` (official solver states and ours), or a bare state dict; v1 and v2 official
key names; a `module.` prefix left by DDP. Problems are one-line `CheckpointError`s that
name the file, the architecture and the first offending keys.
"""
from __future__ import annotations

import collections
import warnings
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from rtdetr.core.errors import CheckpointError, first_line

# Entries the model computes itself from its configuration and the input size.
COMPUTED_KEYS = re.compile(r"^decoder\.(anchors|valid_mask)$|\.num_points_scale$")
# Fused RepVGG convolutions of a deployed official model (derived from the two branches).
DEPLOY_KEYS = re.compile(r"\.bottlenecks\.\d+\.conv\.(weight|bias)$")
# v1 official names -> ours (= official v2 names).
V1_RENAMES = [
    (re.compile(r"^(encoder\.input_proj\.\d+)\.0\."), r"\1.conv."),
    (re.compile(r"^(encoder\.input_proj\.\d+)\.1\."), r"\1.norm."),
    (re.compile(r"^decoder\.enc_output\.0\."), "decoder.enc_output.proj."),
    (re.compile(r"^decoder\.enc_output\.1\."), "decoder.enc_output.norm."),
]
# D-FINE / DEIM / RT-DETRv4 HGNetv2 names -> ours (= RT-DETRv2's, the same blocks).
DFINE_RENAMES = [
    (re.compile(r"\.aggregation\.0\."), ".aggregation_squeeze_conv."),
    (re.compile(r"\.aggregation\.1\."), ".aggregation_excitation_conv."),
    (re.compile(r"\.(stem2[ab])\.conv\.weight$"), r".\1.conv.1.weight"),
]
# Entries a file may lack: counters, and constants the model sets itself (D-FINE's fixed `up` and
# `reg_scale`, HGNetv2's learnable-affine scale that starts at 1, RT-DETRv4's training-only projector,
# which `rtdetr.train.distill` takes when a run distils).
OPTIONAL_KEYS = re.compile(r"\.num_batches_tracked$|\.lab\.scale$|^decoder\.(decoder\.)?(up|reg_scale)$"
                           r"|^encoder\.feature_projector\.")
TRAINING_ONLY_PREFIX = "encoder.feature_projector."
MAX_LISTED = 3


def read_checkpoint(path: str | Path) -> dict:
    """torch.load a file, turning every way it can be unreadable into a one-line CheckpointError."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Official solver states pickle a Counter (MultiStepLR milestones) next to the weights.
            with torch.serialization.safe_globals([collections.Counter]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (or one holding objects other than weights)") from None
    except Exception as e:  # a malformed file can make torch.load raise almost anything
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or another format?): "
                              f"{first_line(e)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def extract_state_dict(ckpt: dict, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint (EMA weights first), with our key names."""
    if isinstance(ckpt.get("ema"), dict) and isinstance(ckpt["ema"].get("module"), dict):
        sd = ckpt["ema"]["module"]
    elif isinstance(ckpt.get("model"), dict):
        sd = ckpt["model"]
    elif isinstance(ckpt.get("state_dict"), dict):
        sd = ckpt["state_dict"]
    elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt
    else:
        keys = ", ".join(list(map(str, ckpt))[:5])
        raise CheckpointError(f"{path}: no model weights found (top-level keys: {keys})")
    return normalise_keys(sd)


def normalise_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip `module.`, rename v1 and D-FINE-family keys, drop computed buffers and fused deploy convolutions."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        for pattern, repl in (*V1_RENAMES, *DFINE_RENAMES):
            key = pattern.sub(repl, key)
        if COMPUTED_KEYS.search(key) or DEPLOY_KEYS.search(key):
            continue
        out[key] = value
    return out


def _first(items: list[str]) -> str:
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def check_compatible(model: nn.Module, sd: dict[str, torch.Tensor], path: str | Path, arch: str) -> None:
    """Raise CheckpointError unless `sd` has exactly the model's entries with the model's shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not OPTIONAL_KEYS.search(k)]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {list(sd[k].shape)} vs {list(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if wrong:
        problems.append(f"shape mismatch (file vs model) {_first(wrong)}")
    if missing:
        problems.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if problems:
        raise CheckpointError(f"{path}: does not fit architecture {arch}: " + "; ".join(problems))


def load_weights(model: nn.Module, sd: dict[str, torch.Tensor], path: str | Path, arch: str) -> None:
    """Check, then copy `sd` into `model` (cast to the model's dtypes). An RT-DETRv4 file's
    distillation projector is left out: it is training-only (`projector_state` gives it to a
    distilling run), so RT-DETRv4 and DEIM files load into the same architecture."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(TRAINING_ONLY_PREFIX)}
    check_compatible(model, sd, path, arch)
    model.load_state_dict(sd, strict=False)


def projector_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The training-only distillation projector of an RT-DETRv4 file, keyed as an
    `nn.Sequential(nn.Linear)` ("0.weight", "0.bias"); {} when the file has none."""
    return {k[len(TRAINING_ONLY_PREFIX):]: v for k, v in sd.items() if k.startswith(TRAINING_ONLY_PREFIX)}


def num_classes_of(sd: dict[str, torch.Tensor]) -> int | None:
    """The class count a state dict was trained for, read from its encoder score head."""
    w = sd.get("decoder.enc_score_head.weight")
    return int(w.shape[0]) if w is not None else None


OFFICIAL = "official"


def resolve_weights(weights: str | Path) -> Path:
    """A local file for `weights`: an existing path, or a zoo name whose release file is downloaded
    once into the cache (`rtdetr.core.hub`)."""
    from rtdetr.core.hub import download
    from rtdetr.models import zoo
    if str(weights) in zoo.ZOO:
        entry = zoo.get_entry(str(weights))
        if entry.weights is None:
            raise ValueError(f"{weights}: no released weights are known for this model")
        if not entry.weights.direct:
            return manual_download(str(weights), entry.weights)
        return download(entry.weights.url)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (and not a zoo model name; see rtdetr.list_models())")
    return path


def manual_download(name: str, weights) -> Path:
    """The cached file of a release that needs a browser (Google Drive): there, or a one-line
    error that says where to get it and where to put it."""
    from rtdetr.core.hub import WeightsDownloadError, cache_dir
    target = cache_dir() / weights.filename
    if target.is_file():
        return target
    raise WeightsDownloadError(
        f"{name}: the official weights are on Google Drive ({weights.url}), which a plain HTTP download cannot "
        f"fetch; download {weights.filename} in a browser and put it at {target}, or pass weights=PATH")


def zoo_name_for_file(filename: str) -> str | None:
    """The zoo model whose official release file has this name, if any."""
    from rtdetr.models import zoo
    return next((name for name, entry in zoo.ZOO.items()
                 if entry.weights is not None and entry.weights.filename == filename), None)


def own_metadata(ckpt: dict) -> dict | None:
    """The library's own record in a checkpoint (architecture, class names, category ids), if any."""
    meta = ckpt.get("rtdetr")
    return meta if isinstance(meta, dict) and "config" in meta else None


def load_network(model: str | Path, weights: str | Path | None = OFFICIAL, *, num_classes: int | None = None,
                 decoder_layers: int | None = None) -> tuple[nn.Module, dict]:
    """(network in eval mode, {'class_names', 'category_ids'}) for a zoo name or a checkpoint file.

    model: a zoo name, a checkpoint saved by this library (its architecture is inside), or an
           official release file (recognised by its published name).
    weights: for a zoo name: "official" (its release file, downloaded once), another zoo name,
           a file, or None (random initial weights).
    """
    from rtdetr.models import zoo
    from rtdetr.models.config import ModelConfig
    from rtdetr.models.nn.detector import build_model

    name = str(model)
    if name in zoo.ZOO:
        cfg = zoo.get_config(name, decoder_layers=decoder_layers)
        if weights is None:
            return build_model(cfg.with_classes(num_classes or cfg.num_classes)).eval(), _class_metadata({}, 0)
        path = resolve_weights(name if weights == OFFICIAL else weights)
        return _with_weights(cfg, read_checkpoint(path), path, num_classes)

    path = Path(model).expanduser()
    if path.suffix not in (".pt", ".pth") and not path.exists():
        zoo.get_entry(name)  # the one-line "unknown model" error, with the known names
    ckpt = read_checkpoint(path)
    meta = own_metadata(ckpt)
    if meta is not None:
        cfg = zoo.with_decoder_layers(ModelConfig.from_dict(meta["config"]), decoder_layers)
        net = build_model(cfg)
        load_weights(net, extract_state_dict(ckpt, path), path, cfg.name)
        return net.eval(), _class_metadata(meta, net.num_classes)
    official = zoo_name_for_file(path.name)
    if official is None:
        raise CheckpointError(f"{path}: cannot tell which architecture these weights are for (not saved by rtdetr, "
                              f"not an official release name); add --model NAME, or load_model(NAME, "
                              f"weights='{path}') (see `rtdetr models`)")
    return _with_weights(zoo.get_config(official, decoder_layers=decoder_layers), ckpt, path, num_classes)


def _with_weights(cfg, ckpt: dict, path: Path, num_classes: int | None) -> tuple[nn.Module, dict]:
    from rtdetr.models.nn.detector import build_model
    sd = extract_state_dict(ckpt, path)
    cfg = cfg.with_classes(num_classes or num_classes_of(sd) or cfg.num_classes)
    net = build_model(cfg)
    load_weights(net, sd, path, cfg.name)
    return net.eval(), _class_metadata(own_metadata(ckpt) or {}, net.num_classes)


def _class_metadata(meta: dict, num_classes: int) -> dict:
    names, ids = meta.get("class_names"), meta.get("category_ids")
    if names is not None and len(names) != num_classes:
        warnings.warn(f"checkpoint lists {len(names)} class names for {num_classes} classes; ignoring them")
        names = None
    # The data set's own category ids (label -> id), for results in COCO format.
    ids = list(ids) if ids is not None and len(ids) == num_classes else None
    size = meta.get("imgsz")  # the size it was trained at (checkpoints of runs; older ones have none)
    size = tuple(int(v) for v in size) if isinstance(size, (list, tuple)) and len(size) == 2 else None
    return {"class_names": None if names is None else list(names), "category_ids": ids, "trained_imgsz": size}


def save_checkpoint(net: nn.Module, path: str | Path, class_names: list[str] | None = None,
                    category_ids: list[int] | None = None, trained_imgsz: tuple[int, int] | None = None,
                    **extra) -> Path:
    """Write `net` in the library's own format (architecture, class names, category ids and the
    size it was trained at, when known), atomically."""
    from rtdetr.core.io import save_atomic
    meta = {"config": net.cfg.to_dict(), "class_names": class_names, "category_ids": category_ids,
            "imgsz": None if trained_imgsz is None else list(trained_imgsz)}
    return save_atomic({"model": net.state_dict(), "rtdetr": meta, **extra}, path)
