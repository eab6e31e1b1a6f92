"""Frozen feature teachers for RT-DETRv4 distillation: `load_teacher(spec)` -> `Teacher`.

`teacher(images [B, 3, H, W] RGB in [0, 1], grid=(h, w))` -> features [B, dim, h, w] float32, on the
student's F5 grid (h, w) = (H/32, W/32); the trainer projects F5 to `dim` and pulls it towards them.

Spec forms:
  - a known name (`TEACHERS`, e.g. "dinov3_vitb16", the official RT-DETRv4 teacher): the Hugging Face
    folder `<cache>/teachers/<repo name>` (`rtdetr.core.hub.cache_dir`); never downloaded here.
  - a folder with config.json: a transformers ViT (DINOv3, DINOv2, DINOv2 with registers).
  - "timm:<arch>:<file>": a timm ViT with the weights of a local file (timm's checkpoint filters apply).
  - a TorchScript file returning patch tokens [B, N, D] or a map [B, D, gh, gw].
  - one of our detectors (self-distillation): a checkpoint of ours (trainer, `Detector.save`), an
    official release file, a zoo name whose release file is in the cache, or an `RTDETR` module;
    its features are its AIFI output.

ViT teachers see the ImageNet-normalised batch resized to (h * p, w * p) for patch size p, so their
token grid is the student's grid; our detectors see the raw batch at the student's size.
"""
from __future__ import annotations

import copy
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rtdetr.core.errors import CheckpointError, first_line, require

__all__ = ["TEACHERS", "Teacher", "TeacherError", "load_teacher"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TeacherError(ValueError):
    """A teacher that cannot be loaded; one line naming the file or folder and what to do."""


# Known names -> Hugging Face repo ids. The DINOv3 repos are gated (Meta's licence is accepted on the page).
_V3 = "facebook/dinov3-{}-pretrain-lvd1689m"
TEACHERS: dict[str, str] = {
    **{f"dinov3_{v}": _V3.format(v) for v in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus")},
    **{f"dinov2_vit{s[0]}14": f"facebook/dinov2-{s}" for s in ("small", "base", "large", "giant")},
    **{f"dinov2reg_vit{s[0]}14": f"facebook/dinov2-with-registers-{s}" for s in ("small", "base", "large", "giant")},
}
SPEC_FORMS = (f"a known name ({', '.join(TEACHERS)}), a Hugging Face model folder with config.json, "
              "timm:<arch>:<weights file>, a TorchScript file, a checkpoint of ours or a zoo model name")


class Teacher(nn.Module):
    """A frozen feature teacher. `teacher(images, grid)`: images [B, 3, H, W] RGB in [0, 1] (the
    student's batch), grid (h, w) the student's F5 size -> features [B, dim, h, w], float32.

    Always in eval mode (`train(True)` is ignored: DINOv3 would jitter its RoPE coordinates and
    BatchNorms would update), no parameter needs a gradient, and the forward runs in float32 with no
    autograd graph, whatever autocast is active outside."""

    def __init__(self, dim: int, name: str):
        super().__init__()
        self.dim = int(dim)
        self.name = name

    def freeze(self) -> Teacher:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    def features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """images [B, 3, H, W] float32 in [0, 1] -> [B, D, gh, gw], ideally (gh, gw) == grid."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = (int(g) for g in grid)
        if images.ndim != 4 or images.shape[1] != 3 or h < 1 or w < 1:
            raise ValueError(f"teacher {self.name}: expected images [B, 3, H, W] and a grid (h, w), "
                             f"got {list(images.shape)} and {tuple(grid)}")
        # Outside autocast (often bf16 in training) the targets would lose precision: fp32 always.
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            feats = self.features(images.float(), (h, w)).float()
            if feats.shape[-2:] != (h, w):
                feats = F.interpolate(feats, size=(h, w), mode="bilinear", align_corners=False)
        return feats.contiguous()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, name={self.name!r}"


class PatchTeacher(Teacher):
    """A ViT: normalise, resize the batch to (h * p, w * p), drop the prefix (CLS, register) tokens and
    lay the patch tokens out as a map. Subclasses give `tokens(x)`: [B, prefix + N, D] or [B, D, gh, gw]."""

    def __init__(self, dim: int, name: str, patch_size, num_prefix_tokens: int,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__(dim, name)
        p = patch_size if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
        self.patch_size = (int(p[0]), int(p[-1]))
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> normalised [B, 3, h * ph, w * pw]."""
        x = (images - self.mean) / self.std
        size = (grid[0] * self.patch_size[0], grid[1] * self.patch_size[1])
        H, W = x.shape[-2:]
        k = H // size[0]
        if k >= 1 and (H, W) == (k * size[0], k * size[1]):
            # An integer factor: average k x k blocks, as the official code does (640 -> 320 for patch 16).
            return F.avg_pool2d(x, k) if k > 1 else x
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.preprocess(images, grid)
        out = self.tokens(x)
        if out.ndim == 4:
            return out
        gh, gw = x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]
        patches = out[:, self.num_prefix_tokens:]
        if out.ndim != 3 or patches.shape[1] != gh * gw:
            raise ValueError(f"teacher {self.name}: expected {self.num_prefix_tokens} + {gh}x{gw} tokens "
                             f"[B, N, D] for a {x.shape[-2]}x{x.shape[-1]} input, got {list(out.shape)}")
        return patches.transpose(1, 2).reshape(out.shape[0], -1, gh, gw)  # row-major tokens -> [B, D, gh, gw]


class HFTeacher(PatchTeacher):
    """A transformers vision model: `last_hidden_state` [B, 1 + registers + N, D], after the final norm."""

    def __init__(self, model: nn.Module, name: str):
        cfg = model.config
        super().__init__(cfg.hidden_size, name, cfg.patch_size, 1 + int(getattr(cfg, "num_register_tokens", 0) or 0))
        self.model = model.float()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).last_hidden_state


class TimmTeacher(PatchTeacher):
    """A timm ViT made with dynamic_img_size: `forward_features` [B, prefix + N, D]."""

    def __init__(self, model: nn.Module, name: str):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        # timm records the normalisation the weights were trained with (0.5 for augreg and CLIP ViTs).
        super().__init__(model.num_features, name, model.patch_embed.patch_size, model.num_prefix_tokens,
                         cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))
        self.model = model.float()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class ScriptTeacher(PatchTeacher):
    """A TorchScript module: `num_prefix_tokens` and `patch_size` attributes if it has them (else 0, 16)."""

    def __init__(self, model: nn.Module, name: str):
        prefix = getattr(model, "num_prefix_tokens", 0)
        super().__init__(1, name, getattr(model, "patch_size", 16), prefix if isinstance(prefix, int) else 0)
        self.model = model
        probe = self.freeze()(torch.rand(1, 3, 2 * self.patch_size[0], 2 * self.patch_size[1]), (2, 2))
        self.dim = int(probe.shape[1])  # [1, D, 2, 2]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"teacher {self.name}: returned a {type(out).__name__}, not a tensor")
        return out


class DetectorTeacher(Teacher):
    """One of our detectors: its AIFI output [B, hidden_dim, H/32, W/32] for the raw [0, 1] batch."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__(model.encoder.hidden_dim, name)
        self.model = copy.deepcopy(model).float()  # the caller's model keeps its modes and gradients
        self.model.fix_size(None)  # any student size

    def features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        enc = self.model.encoder
        return enc.attend(self.model.backbone(images))[enc.use_encoder_idx[-1]]


def load_teacher(spec: str | Path | nn.Module, device=None) -> Teacher:
    """A frozen `Teacher` from any spec form (module docstring), on `device` (default: where it loads, CPU)."""
    teacher = _load(spec).freeze()
    return teacher.to(device) if device is not None else teacher


def _load(spec) -> Teacher:
    from rtdetr.models import zoo
    from rtdetr.models.nn.detector import RTDETR, module_of
    if isinstance(spec, Teacher):
        return spec
    if isinstance(module_of(spec), RTDETR):  # an RTDETR, or a facade holding one (rtdetr.Detector)
        net = module_of(spec)
        return DetectorTeacher(net, f"rtdetr {net.cfg.name} (module)")
    if isinstance(spec, nn.Module):
        raise TeacherError(f"a {type(spec).__name__} module is not a teacher; pass {SPEC_FORMS}")
    text = str(spec)
    if text.startswith("timm:"):
        return _timm(text)
    if text in TEACHERS:
        return _known(text)
    if text in zoo.ZOO:
        return _zoo(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return _hf(path)
    if path.is_file():
        return _script(path) if _is_torchscript(path) else _checkpoint(path)
    raise TeacherError(f"{text}: no such file or folder, and not a teacher spec; pass {SPEC_FORMS}")


def _known(name: str) -> Teacher:
    from rtdetr.core.hub import cache_dir
    repo = TEACHERS[name]
    folder = cache_dir() / "teachers" / repo.rsplit("/", 1)[-1]
    if not (folder / "config.json").is_file():
        gated = " (gated: accept Meta's DINOv3 licence on that page first)" if "/dinov3-" in repo else ""
        raise TeacherError(f"{name}: teacher folder {folder} not found (or without config.json); download "
                           f"https://huggingface.co/{repo}{gated} into it (e.g. hf download {repo} --local-dir "
                           f"{folder}), or pass --teacher PATH with any local model folder")
    return _hf(folder, name)


def _hf(folder: Path, name: str | None = None) -> Teacher:
    if not (folder / "config.json").is_file():
        raise TeacherError(f"{folder}: a folder without config.json, not a Hugging Face model folder")
    transformers = require("transformers", extra="distill")
    try:
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # unknown model type, missing or corrupt weights: all of them one line
        raise TeacherError(f"{folder}: cannot load it with transformers: {first_line(e)}") from None
    if not hasattr(model.config, "patch_size") or not hasattr(model.config, "hidden_size"):
        raise TeacherError(f"{folder}: a {type(model).__name__} is not a ViT (no patch_size in config.json)")
    return HFTeacher(model, f"{name or model.config.model_type} (HF) {folder}")


def _timm(spec: str) -> Teacher:
    arch, _, file = spec[len("timm:"):].partition(":")
    path = Path(file).expanduser()
    if not arch or not file:
        raise TeacherError(f"{spec}: expected timm:<arch>:<weights file>, e.g. timm:vit_small_patch16_224:vit_s.pth")
    if not path.is_file():
        raise TeacherError(f"{path}: no such file (the weights of the timm teacher {arch})")
    timm = require("timm", extra="distill")
    try:
        # A local `file` in the pretrained config: timm loads it (with its checkpoint filters) and never downloads.
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                  num_classes=0, dynamic_img_size=True)
    except Exception as e:
        raise TeacherError(f"{path}: cannot load it as timm {arch}: {first_line(e)}") from None
    if not hasattr(model, "patch_embed") or not hasattr(model, "num_prefix_tokens"):
        raise TeacherError(f"{spec}: timm {arch} is not a ViT (no patch_embed)")
    return TimmTeacher(model, f"timm {arch} {path}")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a `<root>/code/` folder; torch.save's zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/")[1:2] == ["code"] for n in z.namelist())


def _script(path: Path) -> Teacher:
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; the file is the user's choice
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
        return ScriptTeacher(model, f"torchscript {path}")
    except Exception as e:
        raise TeacherError(f"{path}: cannot use this TorchScript file as a teacher: {first_line(e)}") from None


def _checkpoint(path: Path) -> Teacher:
    from rtdetr.models.weights import load_network
    try:
        net, _ = load_network(path)
    except CheckpointError as e:
        raise TeacherError(f"{first_line(e)} (as a teacher: {SPEC_FORMS})") from None
    return DetectorTeacher(net, f"rtdetr {net.cfg.name} {path}")


def _zoo(name: str) -> Teacher:
    from rtdetr.core.hub import cache_dir
    from rtdetr.models import zoo
    from rtdetr.models.weights import load_network
    weights = zoo.get_entry(name).weights
    if weights is None:
        raise TeacherError(f"{name}: no released weights are known for this model; pass a checkpoint file of it")
    # Where rtdetr.core.hub.download and manual_download keep the release file; looked at, never fetched.
    target = cache_dir() / weights.filename
    if not target.is_file():
        how = (f"download {weights.url} there (rtdetr.load_model('{name}') does it once)" if weights.direct
               else f"download {weights.url} in a browser and put it there")
        raise TeacherError(f"{name}: teacher weights {target} not found; {how}, or pass --teacher PATH")
    try:
        net, _ = load_network(name, weights=target)
    except CheckpointError as e:
        raise TeacherError(f"{first_line(e)} (the cached release file of {name})") from None
    return DetectorTeacher(net, f"rtdetr {name} {target}")
