"""What a training run is: one explicit dataclass, the same for the Python API and `rtdetr train`."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from rtdetr.models.config import ModelConfig
from rtdetr.core.sizes import check_imgsz


@dataclass
class TrainConfig:
    """A training run. A field left None takes the value of the run's recipe (`recipe`, by
    default the model's own official recipe; demo and custom architectures: see `recipe`), so
    the recipe is the single source of the defaults; a value given here overrides it. The run
    folder's `args.yaml` records the effective values and which came from the recipe.

    data:            a data set folder or file (COCO json, YOLO data.yaml, Pascal VOC; detected)
    model:           a zoo name (`rtdetr models`), "demo" (the small CPU configuration), or a
                     ModelConfig of your own (Python API)
    weights:         "official" fine-tunes from the zoo model's COCO weights, a file loads those,
                     None trains the detector from scratch (see pretrained_backbone)
    pretrained_backbone: start the backbone from its ImageNet-pretrained file (downloaded once
                     into the cache), as the official recipes do. None: yes for zoo architectures
                     trained without weights; no for "demo" and ModelConfigs of your own (nothing
                     is downloaded). False: a random backbone
    recipe:          official optimiser / schedule recipe by zoo name; None: the model's own
                     ("demo" has its own; a ModelConfig of your own takes rtdetrv2_r18vd's)
    epochs, batch:   epochs, and images per optimiser step over all processes (recipe: the
                     official epochs and total batch size)
    imgsz:           training and validation size (height, width) (recipe: its eval size, square)
    lr, lr_backbone: overrides of the recipe's learning rates (lr_backbone None: the recipe's
                     parameter groups decide the backbone's rate)
    weight_decay:    override of the recipe's weight decay
    warmup_steps:    warm-up length in optimiser steps
    warmup_shape:    "linear" (lr t/W) or "quadratic" (lr (t/W)^2)
    lr_schedule:     "multistep", "cosine" (to 5 %) or "flatcosine" (`schedule.LRSchedule`)
    lr_gamma:        "multistep": the factor at each milestone; "flatcosine": the final factor
    flat_epoch, no_aug_epoch: "flatcosine": flat until `flat_epoch`, the final factor for the
                     last `no_aug_epoch` epochs
    amp:             "off", "bf16" (CPU or CUDA autocast) or "fp16" (CUDA, with a grad scaler);
                     None: "fp16" on CUDA where the recipe uses AMP, else "off"
    ema:             keep an EMA of the weights (evaluated and saved as `best.pt`)
    ema_decay, ema_warmups: EMA decay and its warm-up in updates
    ema_restart_epoch, ema_restart_decay: EMA restarts ("stage 2", `TrainRecipe.ema_restart_decay`):
                     at `ema_restart_epoch` the best state so far is reloaded and the EMA decay
                     becomes `ema_restart_decay`; each later epoch that is no new best reloads it
                     again and lowers the decay by 1e-4 (None: no restarts)
    clip_max_norm:   gradient clipping (0: off)
    losses:          the criterion's losses by name: "vfl", "boxes" (loss_bbox and loss_giou), ...
    loss_weights:    the weight of each loss term by name, e.g. {"loss_vfl": 1, "loss_bbox": 5}
                     (a string "loss_vfl=1,loss_bbox=5" on the command line)
    loss_gamma:      the classification loss's focusing exponent (VFL 2, MAL 1.5)
    loss_union_set:  box and local terms on the union of all levels' matched pairs (D-FINE, DEIM)
    grad_accum:      micro-batches per optimiser step
    grad_checkpoint: recompute decoder layers in backward to save memory
    freeze_backbone: train the encoder and decoder only
    sync_bn:         synchronised batch norm across processes (multi-GPU)
    aug:             augmentation on or off; aug_stop_epoch / multiscale / multiscale_stop_epoch
                     as the official policy (a recipe's stop epoch None: never stops; to never
                     stop where the recipe does, give a stop epoch of `epochs` or more)
    mosaic_epochs, mosaic_prob: DEIM's Mosaic in epochs [e0, e1) with this probability; with
                     it the strong augmentations start at e0 (`TrainRecipe.mosaic_epochs`)
    mixup_epochs, mixup_prob: the collate's MixUp in epochs [start, end) with this probability
    patience, min_delta: early stopping on validation AP50:95 (None: off)
    val_interval:    validate every N epochs
    workers:         DataLoader worker processes
    seed:            everything random derives from it (data order, augmentation, noise)
    device:          "cpu", "cuda", "cuda:1", ... (torchrun sets the local GPU itself)
    project, name:   the run folder is project/name (name, name2, ... unless exist_ok)
    resume:          True resumes the run folder's last.pt; a path resumes that file
    save_period_steps: also write last.pt every N optimiser steps (0: at epoch ends only)
    max_steps:       stop after this many optimiser steps in total (a budget; also for tests)
    teacher:         distil from this frozen teacher (RT-DETRv4, `rtdetr.train.distill`): a known
                     name (dinov3_vitb16, dinov2_vitb14, ...: a local folder, never downloaded),
                     a Hugging Face model folder, "timm:ARCH:FILE", a TorchScript file, or a
                     detector of ours (its checkpoint or zoo name: its AIFI output); training
                     only. None: no distillation
    distill_weight:  the distillation loss's initial weight lambda (recipe: RT-DETRv4's per size)
    gam:             adapt lambda each epoch (Gradient-guided Adaptive Modulation); False: static
    gam_rho, gam_delta: the band of AIFI's share of the gradient, in %, GAM keeps lambda in
    distill_default_weight: GAM's lambda where the band cannot steer (no AIFI gradient; the
                     epochs from `multiscale_stop_epoch` on)
    time:            a training budget in hours (Ultralytics' `time`), validation included:
                     after each epoch the number of epochs is planned anew from the mean epoch
                     time so that the run ends within it, and the lr schedule follows the plan;
                     `epochs` is only the plan for the first epoch. A run past the budget stops
                     after the step that crossed it. None: off
    """

    data: str = ""
    model: str | ModelConfig = "rtdetrv2_r18vd"
    weights: str | None = None
    pretrained_backbone: bool | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch: int | None = None
    imgsz: tuple[int, int] | None = None
    lr: float | None = None
    lr_backbone: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    warmup_shape: str | None = None
    lr_schedule: str | None = None
    lr_gamma: float | None = None
    flat_epoch: int | None = None
    no_aug_epoch: int | None = None
    amp: str | None = None
    ema: bool = True
    ema_decay: float | None = None
    ema_warmups: int | None = None
    ema_restart_epoch: int | None = None
    ema_restart_decay: float | None = None
    clip_max_norm: float | None = None
    losses: tuple[str, ...] | None = None
    loss_weights: dict[str, float] | None = None
    loss_gamma: float | None = None
    loss_union_set: bool | None = None
    grad_accum: int = 1
    grad_checkpoint: bool = False
    freeze_backbone: bool = False
    sync_bn: bool = False
    aug: bool = True
    aug_stop_epoch: int | None = None
    multiscale: bool | None = None
    multiscale_stop_epoch: int | None = None
    mosaic_epochs: tuple[int, int] | None = None
    mosaic_prob: float | None = None
    mixup_epochs: tuple[int, int] | None = None
    mixup_prob: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    val_interval: int = 1
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: bool | str = False
    save_period_steps: int = 0
    max_steps: int | None = None
    time: float | None = None
    teacher: str | None = None
    distill_weight: float | None = None
    gam: bool = True
    gam_rho: float | None = None
    gam_delta: float | None = None
    distill_default_weight: float | None = None
    class_names: list[str] | None = field(default=None, repr=False)

    @classmethod
    def from_kwargs(cls, **kwargs) -> "TrainConfig":
        """Build from keyword arguments; an unknown name is an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        if kwargs.get("imgsz") is not None:
            kwargs["imgsz"] = check_imgsz(kwargs["imgsz"])
        if kwargs.get("losses") is not None:  # "vfl,boxes", ["vfl", "boxes"] or ("vfl,boxes",)
            losses = [kwargs["losses"]] if isinstance(kwargs["losses"], str) else kwargs["losses"]
            kwargs["losses"] = tuple(n.strip() for item in losses for n in str(item).split(",") if n.strip())
        for key in ("mosaic_epochs", "mixup_epochs"):  # "4,64", [4, 64] (args.yaml) -> (4, 64)
            if kwargs.get(key) is not None:
                kwargs[key] = _epoch_range(key, kwargs[key])
        if kwargs.get("loss_weights") is not None:
            kwargs["loss_weights"] = _weights(kwargs["loss_weights"])
        if isinstance(kwargs.get("model"), dict):  # as args.yaml writes a ModelConfig
            kwargs["model"] = ModelConfig.from_dict(kwargs["model"])
        if kwargs.get("resume") in ("", "false", "False"):
            kwargs["resume"] = False
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


def _epoch_range(key: str, value) -> tuple[int, int]:
    """(start, end) epochs from a pair or a "start,end" string; a one-line ValueError otherwise."""
    items = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        start, end = (int(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be two epochs (start, end), got {value!r}") from None
    return start, end


def _weights(value) -> dict[str, float]:
    """{term: weight} from a mapping or a "loss_a=1,loss_b=5" string."""
    if isinstance(value, str):
        pairs = [item.split("=") for item in value.replace(" ", "").split(",") if item]
        if not all(len(p) == 2 for p in pairs):
            raise ValueError(f"loss_weights must look like 'loss_vfl=1,loss_bbox=5', got {value!r}")
        value = dict(pairs)
    return {str(k): float(v) for k, v in dict(value).items()}


def defaults() -> dict:
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
