"""A run's data: the training loader (augmentation policy, multi-scale collate, resumable
sampler) and the validation loader, from an effective configuration (`resolve.effective_config`)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from rtdetr.core import distributed as dist
from rtdetr.data import list_splits, load_dataset
from rtdetr.data.collate import MultiScaleCollate, collate_fn
from rtdetr.data.transforms import AugmentConfig, train_transforms, val_transforms
from rtdetr.train.config import TrainConfig
from rtdetr.train.recipes import MULTI_SCALES, TrainRecipe
from rtdetr.train.sampler import ResumableSampler
from rtdetr.train.seeding import SeededTransforms


def augment_config(cfg: TrainConfig, recipe: TrainRecipe) -> AugmentConfig:
    """The augmentation of an effective `cfg`; the recipe only lends its multi-scale sizes."""
    if cfg.multiscale is None or cfg.imgsz is None:
        raise ValueError("augment_config needs an effective configuration (rtdetr.train.resolve.effective_config)")
    scales = None
    if cfg.multiscale:  # the official sizes are for 640; other sizes get the same pattern around them
        official = recipe.scales or MULTI_SCALES  # a recipe without multi-scale, switched on: the official sizes
        repeat = official.count(640) or 3
        scales = official if tuple(cfg.imgsz) == (640, 640) else _scales_around(cfg.imgsz, repeat)
    on = cfg.aug
    return AugmentConfig(size=cfg.imgsz, photometric=on, zoom_out=on, iou_crop=on, flip=on,
                         stop_epoch=cfg.aug_stop_epoch, scales=scales,
                         mosaic_epochs=cfg.mosaic_epochs if on else None, mosaic_prob=cfg.mosaic_prob,
                         mixup_epochs=cfg.mixup_epochs if on else None, mixup_prob=cfg.mixup_prob)


def _scales_around(size: tuple[int, int], repeat: int = 3) -> tuple[int, ...]:
    """The official multi-scale pattern (0.75x .. 1.25x in steps of 32, the base size `repeat`
    times) for `size`."""
    base = max(size)
    lo, hi = int(base * 0.75) // 32 * 32, int(base * 1.25) // 32 * 32
    return tuple(s for s in range(lo, hi + 1, 32) if s != base) + (base,) * repeat


def make_loaders(cfg: TrainConfig, recipe: TrainRecipe, per_process_batch: int, masks: bool = False):
    """(train set, train loader, its sampler, its collate, val loader or None) of an effective `cfg`;
    masks: the targets carry instance masks (a segmentation model's run)."""
    train_set = load_dataset(cfg.data, "train", masks=masks)
    aug = augment_config(cfg, recipe)
    # A Mosaic draws its other samples from the training set itself (untransformed, `load_item`).
    train_set.transforms = SeededTransforms(train_transforms(aug, source=train_set), cfg.seed)
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=cfg.seed, rank=dist.rank(),
                               world_size=dist.world_size())
    collate = MultiScaleCollate(aug.scales, stop_epoch=cfg.multiscale_stop_epoch, seed=cfg.seed,
                                mixup_epochs=aug.mixup_epochs, mixup_prob=aug.mixup_prob)
    # Loaders get their own generators: creating an iterator must not draw from the global RNG,
    # or a resumed run would see different denoising noise than the uninterrupted one.
    train_loader = DataLoader(train_set, batch_size=per_process_batch, sampler=sampler, collate_fn=collate,
                              num_workers=cfg.workers, drop_last=len(sampler) >= per_process_batch,
                              generator=torch.Generator().manual_seed(cfg.seed))
    val_loader = None
    val_split = next((s for s in ("val", "test") if s in list_splits(cfg.data)), None)
    if val_split is not None:
        val_set = load_dataset(cfg.data, val_split, transforms=val_transforms(cfg.imgsz), masks=masks)
        val_sampler = ResumableSampler(len(val_set), shuffle=False, rank=dist.rank(), world_size=dist.world_size())
        val_loader = DataLoader(val_set, batch_size=per_process_batch, sampler=val_sampler, collate_fn=collate_fn,
                                num_workers=cfg.workers, generator=torch.Generator().manual_seed(cfg.seed))
    return train_set, train_loader, sampler, collate, val_loader
