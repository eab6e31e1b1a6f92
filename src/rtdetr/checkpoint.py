"""Reading checkpoints: the official release files and the library's own.

Accepted layouts: `{'ema': {'module': sd}}` (official releases, preferred when present),
`{'model': sd}` (official solver states and ours), or a bare state dict; v1 and v2 official
key names; a `module.` prefix left by DDP. Problems are one-line `CheckpointError`s that
name the file, the architecture and the first offending keys.
"""
from __future__ import annotations

import collections
import pickle
import re
from pathlib import Path

import torch
from torch import nn

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
OPTIONAL_KEYS = re.compile(r"\.num_batches_tracked$")
MAX_LISTED = 3


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


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
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or another format?): {reason}") from None
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
    """Strip `module.`, rename v1 keys, drop computed buffers and fused deploy convolutions."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        for pattern, repl in V1_RENAMES:
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
    """Check, then copy `sd` into `model` (cast to the model's dtypes)."""
    check_compatible(model, sd, path, arch)
    model.load_state_dict(sd, strict=False)


def num_classes_of(sd: dict[str, torch.Tensor]) -> int | None:
    """The class count a state dict was trained for, read from its encoder score head."""
    w = sd.get("decoder.enc_score_head.weight")
    return int(w.shape[0]) if w is not None else None
